/*
 * bgw.c — the plumbing both background workers share (the inbox worker in
 * worker.c, the backfill worker in backfill.c): claiming a shared-memory
 * slot and freeing it at exit, connecting with a pinned search_path, the
 * transaction and heartbeat helpers, and the latch wait between rounds.
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "bgw.h"
#include "junction.h"

/* This process's slot in junction_shared->worker, -1 before junction_bgw_start. */
static int	my_slot = -1;

/* On exit, free our shared-memory slot. */
static void
slot_cleanup(int code, Datum arg)
{
	if (junction_shared == NULL || my_slot < 0)
		return;
	SpinLockAcquire(&junction_shared->mutex);
	junction_shared->worker[my_slot].pid = 0;
	junction_shared->worker[my_slot].latch = NULL;
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

/* Signals, slot, connection, pinned search_path, application name. */
void
junction_bgw_start(int slot, const char *appname)
{
	my_slot = slot;
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
	before_shmem_exit(slot_cleanup, (Datum) 0);

	BackgroundWorkerInitializeConnection(junction_database, NULL, 0);
	pin_search_path();
	pgstat_report_appname(appname);
}

/* Interrupts, then a pending reload of postgresql.conf. */
void
junction_bgw_check_interrupts(void)
{
	CHECK_FOR_INTERRUPTS();
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/* Heartbeat and counters, under the spinlock. */
void
junction_bgw_heartbeat(int processed, int quarantined)
{
	TimestampTz now = GetCurrentTimestamp();

	SpinLockAcquire(&junction_shared->mutex);
	junction_shared->worker[my_slot].heartbeat = now;
	junction_shared->worker[my_slot].processed += processed;
	junction_shared->worker[my_slot].quarantined += quarantined;
	SpinLockRelease(&junction_shared->mutex);
}

/* A transaction and an active snapshot, with the activity shown in pg_stat_activity. */
void
junction_bgw_begin_tx(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

/* Pop the snapshot, commit, report statistics, show the worker idle. */
void
junction_bgw_commit_tx(void)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/* Wait on our latch (set at the commit of an inbox insert), polling as a backstop. */
void
junction_bgw_wait(void)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 junction_poll_interval_ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/*
 * The pause before retry number failures (1-based) of work a transient error
 * rolled back: 1 s, doubling, at most 30 s.  Served like the idle wait: a
 * SIGTERM or a reload is handled at once, an inbox commit ends it early.
 */
static void
retry_pause(int ms)
{
	TimestampTz until = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	for (;;)
	{
		long		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), until);

		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		/* a cancel during the pause finds nothing to cancel: it is dropped, not raised here
		 * (outside the caller's PG_TRY it would end the worker) */
		QueryCancelPending = false;
		junction_bgw_check_interrupts();
	}
}

int
junction_bgw_retry_ms(int failures)
{
	int			ms = 1000;

	while (--failures > 0 && ms < 30000)
		ms *= 2;
	return Min(ms, 30000);
}

/*
 * Whether an error caught by a worker is one to roll back and retry: a
 * transient one (junction_error_is_transient), unless it is a shutdown.
 */
bool
junction_bgw_retryable(int sqlerrcode)
{
	return junction_error_is_transient(sqlerrcode) &&
		sqlerrcode != ERRCODE_ADMIN_SHUTDOWN &&
		sqlerrcode != ERRCODE_CRASH_SHUTDOWN &&
		sqlerrcode != ERRCODE_DATABASE_DROPPED &&
		!ProcDiePending;
}

/*
 * Log a transient error that rolled back what (at LOG, with its SQLSTATE) and
 * pause before retry number failures.  The caller has flushed the error and
 * aborted the transaction.
 */
void
junction_bgw_log_and_pause(ErrorData *edata, const char *what, int failures)
{
	int			ms = junction_bgw_retry_ms(failures);

	pgstat_report_activity(STATE_IDLE, NULL);
	ereport(LOG,
			(errmsg("junction: %s was rolled back and is retried in %d ms: %s (SQLSTATE %s)",
					what, ms, edata->message ? edata->message : "unknown error",
					unpack_sql_state(edata->sqlerrcode)),
			 edata->sqlerrcode == ERRCODE_QUERY_CANCELED ?
			 errhint("A cancel comes from pg_cancel_backend(), statement_timeout, or Citus ending "
					 "the victim of a distributed deadlock.") : 0));
	retry_pause(ms);
}

/*
 * In a worker's PG_CATCH, with the error still current: a retryable error is
 * copied, flushed, its transaction rolled back, logged and paused on
 * (junction_bgw_log_and_pause), and the function returns; any other error is
 * re-thrown, which ends the worker (the postmaster restarts it).  cxt is a
 * context outside the transaction; what names the work for the log.
 */
void
junction_bgw_retry_or_rethrow(MemoryContext cxt, const char *what, int failures)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	if (!junction_bgw_retryable(edata->sqlerrcode))
	{
		FreeErrorData(edata);
		PG_RE_THROW();
	}
	FlushErrorState();
	AbortOutOfAnyTransaction();
	MemoryContextSwitchTo(cxt);
	junction_bgw_log_and_pause(edata, what, failures);
	FreeErrorData(edata);
}
