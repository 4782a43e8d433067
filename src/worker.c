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
#include "utils/timestamp.h"

#include "bgw.h"
#include "junction.h"

/* Retention runs at most this often, deleting at most this many rows per run. */
#define RETENTION_EVERY_MS (60 * 1000)
#define RETENTION_BATCH 10000

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

/* Entry point of each inbox worker (bgw_main_arg: its slot, 0..junction.workers-1). */
void
junction_worker_main(Datum arg)
{
	Oid			ext_oid_seen = InvalidOid;
	TimestampTz last_trim = 0;

	junction_bgw_start(DatumGetInt32(arg), "junction worker");

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
