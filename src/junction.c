/*
 * junction.c — module entry point (_PG_init): the workers' and the drain's
 * GUCs (the API client's are in http.c), shared memory, registration of the
 * inbox workers (worker.c) and the backfill worker (backfill.c), the
 * commit-time wake-up of the workers, and junction._worker_state().
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "junction.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(junction_wake_trigger);
PG_FUNCTION_INFO_V1(junction_wake_at_commit);
PG_FUNCTION_INFO_V1(junction_worker_state);

/* The workers' and the drain's settings (junction_define_gucs). */
char	   *junction_database = NULL;
int			junction_workers = 1;
int			junction_backfill_workers = 2;
int			junction_batch_size = 500;
int			junction_batch_bytes = 16 * 1024 * 1024;
int			junction_poll_interval_ms = 1000;
int			junction_daily_interval_ms = 2000;
static int	junction_sync_progress_after_ms = 5000;
int			junction_inbox_retention_s = 7 * 24 * 3600;
int			junction_signature_tolerance_s = 300;
/* Read by SQL (junction._daily_enabled, junction._daily_deferred); defined here with the others. */
static bool junction_daily = true;
static bool junction_daily_defer = false;

JunctionShared *junction_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Set when this transaction inserted into the inbox; the workers are woken at commit. */
static bool wake_at_commit = false;
static bool xact_callback_registered = false;

/* Ask for our shared memory (PG15: from shmem_request_hook). */
static void
junction_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(JunctionShared)));
}

/* Attach to (or create) the shared state. */
static void
junction_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	junction_shared = ShmemInitStruct("junction", sizeof(JunctionShared), &found);
	if (!found)
	{
		memset(junction_shared, 0, sizeof(JunctionShared));
		SpinLockInit(&junction_shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Define the workers' and the drain's GUCs (the API client's are in http.c). */
void
junction_define_gucs(void)
{
	/*
	 * The workers' settings exist only where the library is preloaded: a
	 * backend that loads it on demand (a Citus worker node running a shard's
	 * query, CREATE EXTENSION propagated there) cannot define
	 * PGC_POSTMASTER settings after startup, and has no workers to configure.
	 */
	if (process_shared_preload_libraries_in_progress)
	{
		DefineCustomStringVariable("junction.database",
								   "Database the junction background workers serve.",
								   NULL, &junction_database, "postgres",
								   PGC_POSTMASTER, 0, NULL, NULL, NULL);
		DefineCustomIntVariable("junction.workers",
								"Number of junction background workers draining the inbox.",
								"0 disables the workers; junction_process_inbox() still works.",
								&junction_workers, 1, 0, JUNCTION_MAX_WORKERS,
								PGC_POSTMASTER, 0, NULL, NULL, NULL);
		DefineCustomIntVariable("junction.backfill_workers",
								"Number of junction background workers running backfill jobs.",
								"They claim jobs with SKIP LOCKED, fairly across users; 0 disables them "
								"(junction_backfill_now() still works), as does junction.workers = 0.",
								&junction_backfill_workers, 2, 0, JUNCTION_MAX_BACKFILL_WORKERS,
								PGC_POSTMASTER, 0, NULL, NULL, NULL);
	}
	DefineCustomIntVariable("junction.batch_size",
							"Inbox rows claimed per transaction by a worker.",
							NULL, &junction_batch_size, 500, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("junction.batch_bytes",
							"Delivery bytes (body plus headers) claimed per transaction by a worker.",
							"A batch ends at junction.batch_size rows or at this many bytes, whichever "
							"comes first; a delivery larger than this is drained alone.",
							&junction_batch_bytes, 16 * 1024 * 1024, 1024, MaxAllocSize,
							PGC_SIGHUP, GUC_UNIT_BYTE, NULL, NULL, NULL);
	DefineCustomIntVariable("junction.poll_interval",
							"Longest a worker sleeps between inbox checks when not woken.",
							NULL, &junction_poll_interval_ms, 1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("junction.inbox_retention",
							"How long processed inbox rows are kept before deletion.",
							"Quarantined rows are never deleted automatically. -1 keeps everything.",
							&junction_inbox_retention_s, 7 * 24 * 3600, -1, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("junction.signature_tolerance",
							"Largest difference between svix-timestamp and the delivery's received_at.",
							NULL, &junction_signature_tolerance_s, 300, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomBoolVariable("junction.daily",
							 "Maintain junction.daily as the typed tables change.",
							 "Off: the upserts skip the consolidated daily values; "
							 "junction_rebuild_daily() brings them up to date.",
							 &junction_daily, true,
							 PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("junction.daily_interval",
							"Longest time an inbox worker leaves junction.daily's queue while it drains.",
							"The queue is recomputed when the inbox is drained, and at least this often "
							"while it is not.",
							&junction_daily_interval_ms, 2000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("junction.sync_progress_after",
							"junction_sync reports a resource with a NOTICE when loading it took at least this long.",
							"0 reports every resource; -1 never.",
							&junction_sync_progress_after_ms, 5000, -1, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomBoolVariable("junction.daily_defer",
							 "Queue junction.daily's recomputation instead of doing it in the upserting transaction.",
							 "The inbox workers set it for themselves and recompute the queue, coalesced, "
							 "when the inbox is drained and at least every junction.daily_interval.",
							 &junction_daily_defer, false,
							 PGC_SUSET, 0, NULL, NULL, NULL);
}

/* Register one static background worker running function(slot). */
static void
register_worker(const char *function, const char *name, const char *type, int slot)
{
	BackgroundWorker w;

	memset(&w, 0, sizeof(w));
	w.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w.bgw_start_time = BgWorkerStart_RecoveryFinished;
	w.bgw_restart_time = 5;
	snprintf(w.bgw_library_name, BGW_MAXLEN, "junction");
	snprintf(w.bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(w.bgw_name, BGW_MAXLEN, "%s", name);
	snprintf(w.bgw_type, BGW_MAXLEN, "%s", type);
	w.bgw_main_arg = Int32GetDatum(slot);
	RegisterBackgroundWorker(&w);
}

/* Register the inbox workers and, with them, the backfill workers. */
static void
register_workers(void)
{
	int			i;

	for (i = 0; i < junction_workers; i++)
	{
		char		name[BGW_MAXLEN];

		snprintf(name, sizeof(name), "junction worker %d", i);
		register_worker("junction_worker_main", name, "junction worker", i);
	}
	for (i = 0; junction_workers > 0 && i < junction_backfill_workers; i++)
	{
		char		name[BGW_MAXLEN];

		snprintf(name, sizeof(name), "junction backfill %d", i);
		register_worker("junction_backfill_main", name, "junction backfill",
						JUNCTION_BACKFILL_SLOT + i);
	}
}

/* Module load: GUCs always; shared memory and workers only when preloaded. */
void
_PG_init(void)
{
	junction_define_gucs();
	junction_http_define_gucs();
	MarkGUCPrefixReserved("junction");
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = junction_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = junction_shmem_startup;
	if (!IsBinaryUpgrade)
		register_workers();
}

/* Set the latch of every running worker. */
void
junction_wake_workers(void)
{
	int			i;

	if (junction_shared == NULL)
		return;
	for (i = 0; i < JUNCTION_SLOTS; i++)
	{
		Latch	   *latch;

		SpinLockAcquire(&junction_shared->mutex);
		latch = junction_shared->worker[i].pid != 0 ? junction_shared->worker[i].latch : NULL;
		SpinLockRelease(&junction_shared->mutex);
		if (latch)
			SetLatch(latch);
	}
}

/* At commit, wake the workers if this transaction queued inbox work. */
static void
junction_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (wake_at_commit)
			{
				wake_at_commit = false;
				junction_wake_workers();
			}
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_ABORT:
			/* a prepared transaction is found by the poll backstop */
			wake_at_commit = false;
			break;
		default:
			break;
	}
}

/* Remember to wake the workers when the current transaction commits. */
static void
wake_workers_at_commit(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(junction_xact_callback, NULL);
		xact_callback_registered = true;
	}
	wake_at_commit = true;
}

/* Statement trigger on junction.inbox: any INSERT or COPY wakes the workers at commit. */
Datum
junction_wake_trigger(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("junction._wake_trigger() must be called as a trigger")));
	wake_workers_at_commit();
	return PointerGetDatum(NULL);
}

/* junction._wake_at_commit(): the same wake-up for SQL callers (e.g. replay). */
Datum
junction_wake_at_commit(PG_FUNCTION_ARGS)
{
	wake_workers_at_commit();
	PG_RETURN_VOID();
}

/* junction._worker_state(): one row per worker slot in use. */
Datum
junction_worker_state(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (junction_shared == NULL)
		PG_RETURN_VOID();
	for (i = 0; i < JUNCTION_SLOTS; i++)
	{
		JunctionWorkerSlot s;
		Datum		values[7];
		bool		nulls[7] = {false};

		SpinLockAcquire(&junction_shared->mutex);
		s = junction_shared->worker[i];
		SpinLockRelease(&junction_shared->mutex);
		if (s.pid == 0)
			continue;
		values[0] = Int32GetDatum(i);
		values[1] = Int32GetDatum(s.pid);
		values[2] = TimestampTzGetDatum(s.started_at);
		values[3] = TimestampTzGetDatum(s.heartbeat);
		values[4] = Int64GetDatum((int64) s.processed);
		values[5] = Int64GetDatum((int64) s.quarantined);
		values[6] = CStringGetTextDatum(i >= JUNCTION_BACKFILL_SLOT ? "backfill" : "inbox");
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	PG_RETURN_VOID();
}
