/*
 * junction.h — what the extension's C files share: settings, the shared-memory
 * worker slots, and the functions one file offers another.  Declarations used
 * by one file only stay in it; the two workers' helpers are in bgw.h.
 */
#ifndef JUNCTION_H
#define JUNCTION_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/latch.h"
#include "storage/spin.h"
#include "utils/jsonb.h"

#include "signature.h"

#define JUNCTION_VERSION "0.3.0"
#define JUNCTION_MAX_WORKERS 8
#define JUNCTION_MAX_BACKFILL_WORKERS 8
/* Slots 0..JUNCTION_MAX_WORKERS-1 drain the inbox; the JUNCTION_MAX_BACKFILL_WORKERS after them run backfills. */
#define JUNCTION_BACKFILL_SLOT JUNCTION_MAX_WORKERS
#define JUNCTION_SLOTS (JUNCTION_MAX_WORKERS + JUNCTION_MAX_BACKFILL_WORKERS)

/*
 * Settings.  Each subsystem defines the GUCs it owns in its own *_define_gucs(), called from
 * _PG_init; a variable another file reads is declared here, once.  Variables only their owner
 * reads are static in it (the API client's keys, URLs, timeouts and limits in http.c).
 */

/* junction.c (junction_define_gucs): the workers and the drain */
extern void junction_define_gucs(void);
extern char *junction_database;
extern int	junction_workers;
extern int	junction_backfill_workers;
extern int	junction_batch_size;
extern int	junction_batch_bytes;
extern int	junction_poll_interval_ms;
extern int	junction_daily_interval_ms;
extern int	junction_inbox_retention_s;
extern int	junction_signature_tolerance_s;

/* http.c (junction_http_define_gucs): the API client */
extern void junction_http_define_gucs(void);
extern bool junction_auto_backfill;

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

/*
 * Shared state: only shareable things (pids, latch pointers, counters), and the time before which
 * no backend sends a data API request: a 429 (its Retry-After, or the backoff) pauses every
 * worker and session together, not only the one that got it.
 */
typedef struct JunctionShared
{
	slock_t		mutex;
	JunctionWorkerSlot worker[JUNCTION_SLOTS];
	TimestampTz api_paused_until;	/* 0: no pause */
	uint64		api_pauses;		/* 429s that set or extended the pause */
} JunctionShared;

extern JunctionShared *junction_shared;

/* junction.c */
extern void junction_wake_workers(void);

/* http.c: whether a data (false) or Management (true) API key or key file is set */
extern bool junction_api_key_configured(bool management);
/* http.c: keep a prefetched page across commits (the backfill workers, which commit every page) */
extern bool junction_prefetch_across_commit;

/* samples.c: a timeseries page as jsonb with its groups' data arrays left in its text (NULL: none) */
extern Jsonb *junction_page_skeleton(StringInfo body);

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

/* Whether an error says nothing about the data (deadlock, cancel, lost connection, ...): retry it. */
extern bool junction_error_is_transient(int sqlerrcode);
extern void junction_drain_reset_plans(void);

/* Background worker entry points, named in their registration (junction.c) */
extern PGDLLEXPORT void junction_worker_main(Datum arg);	/* worker.c: an inbox worker */
extern PGDLLEXPORT void junction_backfill_main(Datum arg);	/* backfill.c: a backfill worker */

#endif							/* JUNCTION_H */
