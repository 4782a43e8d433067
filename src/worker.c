/*
 * worker.c — the background worker: serves junction.database, sleeps on its
 * latch (woken at the commit of any inbox insert, polling as a backstop),
 * drains the inbox batch by batch, and trims processed rows past retention.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/utility.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "junction.h"

/* Retention runs at most this often, deleting at most this many rows per run. */
#define RETENTION_EVERY_MS (60 * 1000)
#define RETENTION_BATCH 10000

static int	my_slot = -1;

/* On exit, free our shared-memory slot. */
static void
worker_cleanup(int code, Datum arg)
{
	if (junction_shared == NULL || my_slot < 0)
		return;
	SpinLockAcquire(&junction_shared->mutex);
	junction_shared->worker[my_slot].pid = 0;
	junction_shared->worker[my_slot].latch = NULL;
	SpinLockRelease(&junction_shared->mutex);
}

/* Record a heartbeat and the counters of the last batch. */
static void
heartbeat(int processed, int quarantined)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&junction_shared->mutex);
	junction_shared->worker[my_slot].heartbeat = now;
	junction_shared->worker[my_slot].processed += processed;
	junction_shared->worker[my_slot].quarantined += quarantined;
	SpinLockRelease(&junction_shared->mutex);
}

/*
 * The workers run as the bootstrap superuser.  Every name their SQL resolves
 * (functions, operators, types) must come from pg_catalog or be qualified,
 * never from a schema another role can write: "$user" and public are the
 * default path, and the database owner can change the default with ALTER
 * DATABASE ... SET search_path.  A session-level setting outranks both (and
 * postgresql.conf on reload), and nothing in the workers' SQL sets it again.
 */
static void
pin_search_path(void)
{
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);
}

/* Start a transaction with a snapshot, as a worker must before running SQL. */
static void
begin_tx(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Commit and report, the counterpart of begin_tx. */
static void
commit_tx(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Delete processed rows older than junction.inbox_retention, a bounded batch at a time. */
static void
trim_inbox(void)
{
	char		sql[512];

	if (junction_inbox_retention_s < 0)
		return;
	snprintf(sql, sizeof(sql),
			 "SELECT junction._trim_inbox(pg_catalog.make_interval(secs => %d), %d)",
			 junction_inbox_retention_s, RETENTION_BATCH);
	begin_tx("junction: inbox retention");
	SPI_connect();
	SPI_execute(sql, false, 0);
	SPI_finish();
	commit_tx();
}

/*
 * The backfill worker's SQL (src/sql/60_api.sql): claim one due job (marking
 * it running), run it (fetch + load + mark done), or record its failure.
 * Jobs travel as jsonb so the C side does not depend on the column types.
 */
#define BACKFILL_CLAIM_SQL \
	"SELECT pg_catalog.to_jsonb(j)::pg_catalog.text FROM junction._backfill_claim() j LIMIT 1"
#define BACKFILL_JOB_COLUMNS \
	"j(kind text, user_id uuid, provider text, resource text, start_date timestamptz, " \
	"end_date timestamptz, workout_id uuid)"
#define BACKFILL_RUN_SQL \
	"SELECT junction._backfill_run(j.kind, j.user_id, j.provider, j.resource, j.start_date, " \
	"j.end_date, j.workout_id) FROM pg_catalog.jsonb_to_record($1::pg_catalog.jsonb) AS " BACKFILL_JOB_COLUMNS
#define BACKFILL_FAILED_SQL \
	"SELECT junction._backfill_failed(j.kind, j.user_id, j.provider, j.resource, j.start_date, " \
	"j.end_date, j.workout_id, $2, $3) FROM pg_catalog.jsonb_to_record($1::pg_catalog.jsonb) AS " BACKFILL_JOB_COLUMNS

/* True when backfills can run here: enabled, a key (or key file) set, the extension created. */
static bool
backfill_enabled(void)
{
	return junction_auto_backfill && junction_api_key_configured(false) &&
		OidIsValid(get_extension_oid("junction", true));
}

/* Claim one job in its own transaction; returns it as jsonb text, or NULL. */
static char *
backfill_claim(MemoryContext keep)
{
	char	   *job = NULL;

	begin_tx("junction: claiming a backfill");
	if (backfill_enabled())
	{
		SPI_connect();
		if (SPI_execute(BACKFILL_CLAIM_SQL, false, 1) == SPI_OK_SELECT && SPI_processed == 1)
		{
			char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			if (v)
				job = MemoryContextStrdup(keep, v);
		}
		SPI_finish();
	}
	commit_tx();
	return job;
}

/* Run one SQL statement with text arguments in its own transaction. */
static void
run_job_sql(const char *activity, const char *sql, int nargs, const char **args)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	int			i;

	begin_tx(activity);
	SPI_connect();
	for (i = 0; i < nargs; i++)
		values[i] = CStringGetTextDatum(args[i]);
	if (SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0) < 0)
		elog(ERROR, "junction: backfill statement failed");
	SPI_finish();
	commit_tx();
}

/* Run a claimed job; on any error record it (retry later or failed) and go on. */
static void
backfill_run(const char *job)
{
	MemoryContext cxt = CurrentMemoryContext;

	PG_TRY();
	{
		run_job_sql("junction: running a backfill", BACKFILL_RUN_SQL, 1, &job);
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		const char *args[3];

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortOutOfAnyTransaction();
		if (edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN || ProcDiePending)
			ReThrowError(edata);	/* the error stack was flushed: throw our copy */
		args[0] = job;
		args[1] = edata->message ? edata->message : "unknown error";
		args[2] = unpack_sql_state(edata->sqlerrcode);
		ereport(LOG, (errmsg("junction backfill failed: %s", args[1])));
		run_job_sql("junction: recording a failed backfill", BACKFILL_FAILED_SQL, 3, args);
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

/* Main loop of the backfill worker: one job at a time, outside any inbox transaction. */
static void
backfill_main(void)
{
	MemoryContext loop_cxt = AllocSetContextCreate(TopMemoryContext, "junction backfill",
												   ALLOCSET_DEFAULT_SIZES);
	bool		reset_done = false;

	for (;;)
	{
		char	   *job;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextReset(loop_cxt);
		heartbeat(0, 0);
		job = NULL;
		if (!reset_done)
		{
			/* jobs left running by a crash go back to pending */
			begin_tx("junction: backfill start");
			if (backfill_enabled())
			{
				SPI_connect();
				SPI_execute("SELECT junction._backfill_reset_running()", false, 0);
				SPI_finish();
				reset_done = true;
			}
			commit_tx();
		}
		if (reset_done)
			job = backfill_claim(loop_cxt);
		if (job != NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(loop_cxt);

			backfill_run(job);
			MemoryContextSwitchTo(old);
			continue;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 junction_poll_interval_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* Entry point of each junction background worker. */
void
junction_worker_main(Datum arg)
{
	Oid			ext_oid_seen = InvalidOid;
	TimestampTz last_trim = 0;

	my_slot = DatumGetInt32(arg);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (junction_shared == NULL)
		ereport(ERROR, (errmsg("junction: shared memory not initialised"),
						errhint("Add junction to shared_preload_libraries.")));
	SpinLockAcquire(&junction_shared->mutex);
	junction_shared->worker[my_slot].pid = MyProcPid;
	junction_shared->worker[my_slot].latch = MyLatch;
	junction_shared->worker[my_slot].started_at = GetCurrentTimestamp();
	junction_shared->worker[my_slot].heartbeat = GetCurrentTimestamp();
	SpinLockRelease(&junction_shared->mutex);
	before_shmem_exit(worker_cleanup, (Datum) 0);

	BackgroundWorkerInitializeConnection(junction_database, NULL, 0);
	pin_search_path();
	if (my_slot == JUNCTION_BACKFILL_SLOT)
	{
		pgstat_report_appname("junction backfill");
		backfill_main();
	}
	pgstat_report_appname("junction worker");

	for (;;)
	{
		bool		more = false;
		Oid			ext_oid;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		begin_tx("junction: draining inbox");
		ext_oid = get_extension_oid("junction", true);
		if (ext_oid != ext_oid_seen)
		{
			/* created, dropped or re-created: old plans point at old tables */
			junction_drain_reset_plans();
			ext_oid_seen = ext_oid;
		}
		if (OidIsValid(ext_oid))
		{
			JunctionDrainResult r = junction_drain_batch(junction_batch_size);

			commit_tx();
			heartbeat(r.processed, r.quarantined);
			more = r.full;	/* a limit ended the batch: more may be waiting */
			if (TimestampDifferenceExceeds(last_trim, GetCurrentTimestamp(), RETENTION_EVERY_MS))
			{
				trim_inbox();
				last_trim = GetCurrentTimestamp();
			}
		}
		else
		{
			/* extension not created in this database (yet): idle quietly */
			commit_tx();
			heartbeat(0, 0);
		}

		if (more)
			continue;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 junction_poll_interval_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
