/*
 * worker.c — the background worker: serves junction.database, sleeps on its
 * latch (woken at the commit of any inbox insert, polling as a backstop),
 * drains the inbox batch by batch, and trims processed rows past retention.
 */
#include "postgres.h"

#include "access/xact.h"
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
			 "DELETE FROM junction.inbox WHERE id IN (SELECT id FROM junction.inbox "
			 "WHERE status = 'processed' AND processed_at < now() - make_interval(secs => %d) "
			 "LIMIT %d)", junction_inbox_retention_s, RETENTION_BATCH);
	begin_tx("junction: inbox retention");
	SPI_connect();
	SPI_execute(sql, false, 0);
	SPI_finish();
	commit_tx();
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
	pgstat_report_appname("junction worker");
	ereport(LOG, (errmsg("junction worker %d started, serving database \"%s\"",
						 my_slot, junction_database)));

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
			more = (r.claimed >= junction_batch_size);
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
