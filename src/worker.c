/*
 * worker.c — the inbox worker: serves junction.database, sleeps on its latch
 * (woken at the commit of any inbox insert, polling as a backstop), drains
 * the inbox batch by batch (drain.c), and trims processed rows past
 * junction.inbox_retention.  The backfill worker is in backfill.c; what both
 * share is in bgw.c.
 */
#include "postgres.h"

#include "commands/extension.h"
#include "executor/spi.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "bgw.h"
#include "junction.h"

/* Retention runs at most this often, deleting at most this many rows per run. */
#define RETENTION_EVERY_MS (60 * 1000)
#define RETENTION_BATCH 10000
/* junction.daily: the queued hours and days are recomputed when the inbox is drained, and at
 * least every junction.daily_interval while it is not, this many of each at a time */
#define DAILY_FLUSH_KEYS 20000

/* Delete processed rows older than junction.inbox_retention, a bounded batch at a time. */
static void
trim_inbox(void)
{
	char		sql[512];
	int			rc;

	if (junction_inbox_retention_s < 0)
		return;
	snprintf(sql, sizeof(sql),
			 "SELECT junction._trim_inbox(pg_catalog.make_interval(secs => %d), %d)",
			 junction_inbox_retention_s, RETENTION_BATCH);
	junction_bgw_begin_tx("junction: inbox retention");
	if ((rc = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "junction: SPI_connect failed for inbox retention: %s",
			 SPI_result_code_string(rc));
	if ((rc = SPI_execute(sql, false, 0)) != SPI_OK_SELECT)
		elog(ERROR, "junction: junction._trim_inbox did not run: %s",
			 SPI_result_code_string(rc));
	if ((rc = SPI_finish()) != SPI_OK_FINISH)
		elog(ERROR, "junction: SPI_finish failed after inbox retention: %s", SPI_result_code_string(rc));
	junction_bgw_commit_tx();
}

/* Whether an SPI text value is boolean true. */
static bool
is_true(const char *v)
{
	return v != NULL && strcmp(v, "t") == 0;
}

/*
 * Recompute the junction.daily hours and days the drained batches queued (the workers run with
 * junction.daily_defer = on), at most DAILY_FLUSH_KEYS of each.  Returns whether some were left.
 * An extension older than 0.3.0 has no queue: nothing to do.
 */
static bool
flush_daily(void)
{
	int			rc;
	bool		more = false;

	junction_bgw_begin_tx("junction: daily values");
	if ((rc = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "junction: SPI_connect failed for daily values: %s", SPI_result_code_string(rc));
	if ((rc = SPI_execute("SELECT pg_catalog.to_regprocedure('junction._daily_flush(integer)') IS NOT NULL",
						  true, 1)) != SPI_OK_SELECT)
		elog(ERROR, "junction: looking up junction._daily_flush failed: %s", SPI_result_code_string(rc));
	if (SPI_processed == 1 && is_true(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)))
	{
		char		sql[128];

		snprintf(sql, sizeof(sql), "SELECT junction._daily_flush(%d) >= %d", DAILY_FLUSH_KEYS, DAILY_FLUSH_KEYS);
		if ((rc = SPI_execute(sql, false, 1)) != SPI_OK_SELECT)
			elog(ERROR, "junction: junction._daily_flush did not run: %s", SPI_result_code_string(rc));
		more = SPI_processed == 1 && is_true(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
	}
	if ((rc = SPI_finish()) != SPI_OK_FINISH)
		elog(ERROR, "junction: SPI_finish failed after daily values: %s", SPI_result_code_string(rc));
	junction_bgw_commit_tx();
	return more;
}

/* What a worker round is doing, for the log line of a rolled-back round. */
static const char *round_what = "an inbox batch";

/*
 * One round: drain a batch, recompute junction.daily when the inbox is drained or
 * junction.daily_interval has passed, trim the inbox when due.  Returns whether more
 * may be waiting.  Each step commits on its own; a transient error in one is rolled
 * back by the caller and the round run again.
 */
static bool
worker_round(Oid *ext_oid_seen, TimestampTz *last_daily, TimestampTz *last_trim)
{
	bool		more = false;
	Oid			ext_oid;

	round_what = "an inbox batch";
	junction_bgw_begin_tx("junction: draining inbox");
	ext_oid = get_extension_oid("junction", true);
	if (ext_oid != *ext_oid_seen)
	{
		/* created, dropped or re-created: old plans point at old tables */
		junction_drain_reset_plans();
		*ext_oid_seen = ext_oid;
	}
	if (!OidIsValid(ext_oid))
	{
		/* extension not created in this database (yet): idle quietly */
		junction_bgw_commit_tx();
		junction_bgw_heartbeat(0, 0);
		return false;
	}
	{
		JunctionDrainResult r = junction_drain_batch(junction_batch_size);

		junction_bgw_commit_tx();
		junction_bgw_heartbeat(r.processed, r.quarantined);
		more = r.full;			/* a limit ended the batch: more may be waiting */
	}
	if (!more || TimestampDifferenceExceeds(*last_daily, GetCurrentTimestamp(), junction_daily_interval_ms))
	{
		round_what = "a junction.daily recomputation";
		if (flush_daily())
			more = true;
		*last_daily = GetCurrentTimestamp();
	}
	if (TimestampDifferenceExceeds(*last_trim, GetCurrentTimestamp(), RETENTION_EVERY_MS))
	{
		round_what = "the inbox retention";
		trim_inbox();
		*last_trim = GetCurrentTimestamp();
	}
	return more;
}

/*
 * Entry point of each inbox worker (bgw_main_arg: its slot, 0..junction.workers-1).
 * A transient error (a deadlock, a cancel, a lost Citus connection) rolls the
 * round's step back and is retried after a pause, logged at LOG; any other error
 * ends the worker, and the postmaster starts it again.
 */
void
junction_worker_main(Datum arg)
{
	/* static: kept across a longjmp out of a round */
	static Oid	ext_oid_seen = InvalidOid;
	static TimestampTz last_trim = 0;
	static TimestampTz last_daily = 0;
	MemoryContext loop_cxt;
	volatile int failures = 0;

	junction_bgw_start(DatumGetInt32(arg), "junction worker");
	/* the upserts queue junction.daily's recomputation; flush_daily does it, coalesced */
	SetConfigOption("junction.daily_defer", "on", PGC_SUSET, PGC_S_OVERRIDE);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "junction worker",
									 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		volatile bool more = false;

		MemoryContextSwitchTo(loop_cxt);
		PG_TRY();
		{
			/* in here, so that a cancel while idle is caught like any other */
			round_what = "the worker's idle wait";
			junction_bgw_check_interrupts();
			more = worker_round(&ext_oid_seen, &last_daily, &last_trim);
			failures = 0;
		}
		PG_CATCH();
		{
			junction_bgw_retry_or_rethrow(loop_cxt, round_what, ++failures);
			more = true;
		}
		PG_END_TRY();
		MemoryContextReset(loop_cxt);

		if (!more)
			junction_bgw_wait();
	}
}
