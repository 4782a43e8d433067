/*
 * junction.h — declarations shared by the extension's C files.
 */
#ifndef JUNCTION_H
#define JUNCTION_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"

#include "signature.h"

#define JUNCTION_VERSION "0.2.0"
#define JUNCTION_MAX_WORKERS 8
/* Slots 0..JUNCTION_MAX_WORKERS-1 drain the inbox; this extra one runs backfills. */
#define JUNCTION_BACKFILL_SLOT JUNCTION_MAX_WORKERS

/* GUCs (junction.c) */
extern char *junction_database;
extern int	junction_workers;
extern int	junction_batch_size;
extern int	junction_batch_bytes;
extern int	junction_poll_interval_ms;
extern int	junction_inbox_retention_s;
extern int	junction_signature_tolerance_s;

/* One background worker's slot in shared memory. */
typedef struct JunctionWorkerSlot
{
	pid_t		pid;			/* 0 when not running */
	Latch	   *latch;			/* the worker's PGPROC latch (in shared memory) */
	TimestampTz started_at;
	TimestampTz heartbeat;		/* last time round the main loop */
	uint64		processed;		/* deliveries processed since start */
	uint64		quarantined;	/* deliveries quarantined since start */
} JunctionWorkerSlot;

/* Shared state: only shareable things (pids, latch pointers, counters). */
typedef struct JunctionShared
{
	slock_t		mutex;
	JunctionWorkerSlot worker[JUNCTION_MAX_WORKERS + 1];
} JunctionShared;

extern JunctionShared *junction_shared;

/* http.c */
extern bool junction_auto_backfill;
extern void junction_http_define_gucs(void);
extern long junction_http_request(bool management, const char *method, const char *path,
								  Jsonb *query, const char *req_body, StringInfo body);
extern Jsonb *junction_parse_response(const char *method, const char *path, StringInfo body);
extern void junction_raise_http_error(bool management, const char *method, const char *path,
									  long status, StringInfo body);
extern char *junction_redact(const char *s, List *extra);
extern bool junction_api_key_configured(bool management);

/* junction.c */
extern void junction_wake_workers(void);

/* verify.c */
extern void junction_headers_from_jsonb(Jsonb *headers, jx_sig_headers *out);
extern int64 junction_unix_seconds(TimestampTz t);

/* drain.c: one batch; returns rows handled (processed + quarantined), -1 if the extension is absent */
typedef struct JunctionDrainResult
{
	int			claimed;
	int			processed;
	int			quarantined;
	bool		no_secret;
	bool		full;			/* stopped at junction.batch_size or junction.batch_bytes */
	int			subxacts;		/* typing subtransactions the batch needed */
} JunctionDrainResult;
extern JunctionDrainResult junction_drain_batch(int max_rows);
extern void junction_drain_reset_plans(void);

/* worker.c */
extern PGDLLEXPORT void junction_worker_main(Datum arg);

#endif							/* JUNCTION_H */
