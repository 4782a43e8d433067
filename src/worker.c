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

/* Entry point of each inbox worker (bgw_main_arg: its slot, 0..junction.workers-1). */
void
junction_worker_main(Datum arg)
{
	Oid			ext_oid_seen = InvalidOid;
	TimestampTz last_trim = 0;
	TimestampTz last_daily = 0;

	junction_bgw_start(DatumGetInt32(arg), "junction worker");
	/* the upserts queue junction.daily's recomputation; flush_daily does it, coalesced */
	SetConfigOption("junction.daily_defer", "on", PGC_SUSET, PGC_S_OVERRIDE);

	for (;;)
	{
		bool		more = false;
		Oid			ext_oid;

		junction_bgw_check_interrupts();
		junction_bgw_begin_tx("junction: draining inbox");
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

			junction_bgw_commit_tx();
			junction_bgw_heartbeat(r.processed, r.quarantined);
			more = r.full;	/* a limit ended the batch: more may be waiting */
			if (!more || TimestampDifferenceExceeds(last_daily, GetCurrentTimestamp(), junction_daily_interval_ms))
			{
				if (flush_daily())
					more = true;
				last_daily = GetCurrentTimestamp();
			}
			if (TimestampDifferenceExceeds(last_trim, GetCurrentTimestamp(), RETENTION_EVERY_MS))
			{
				trim_inbox();
				last_trim = GetCurrentTimestamp();
			}
		}
		else
		{
			/* extension not created in this database (yet): idle quietly */
			junction_bgw_commit_tx();
			junction_bgw_heartbeat(0, 0);
		}

		if (!more)
			junction_bgw_wait();
	}
}
