/*
 * backfill.c — a backfill worker (junction.backfill_workers of them): one job
 * at a time each, outside any inbox transaction.  At start it puts jobs left
 * running by a backend that is gone back to pending; then it claims one due job
 * (a lab order's results, a historical.data.* range or a workout stream; SKIP
 * LOCKED, fairly across users) and runs it one step per transaction: each step
 * loads one page and commits it with the job's checkpoint, so a crash, a restart
 * or a failure resumes at the page it stopped at.  A failure is recorded
 * (retried later or failed) in a transaction of its own.  The SQL is in
 * src/install/65_backfill.sql; what this worker shares with the inbox workers is
 * in bgw.c.
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "bgw.h"
#include "junction.h"

/*
 * A claimed job travels between its transactions as the jsonb text of a
 * junction.backfill_job row; SQL turns it back into the row type, so the C
 * side names no column.
 */
#define BACKFILL_RESET_SQL "SELECT junction._backfill_reset_running()"
#define BACKFILL_CLAIM_SQL \
	"SELECT pg_catalog.to_jsonb(j)::pg_catalog.text FROM junction._backfill_claim() j LIMIT 1"
#define BACKFILL_JOB_FROM_ARG \
	"pg_catalog.jsonb_populate_record(NULL::junction.backfill_job, $1::pg_catalog.jsonb)"
#define BACKFILL_STEP_SQL "SELECT junction._backfill_step(" BACKFILL_JOB_FROM_ARG ")"
#define BACKFILL_FAILED_SQL "SELECT junction._backfill_failed(" BACKFILL_JOB_FROM_ARG ", $2, $3)"

/* True when backfills can run here: enabled, a key (or key file) set, the extension created. */
static bool
backfill_enabled(void)
{
	return junction_auto_backfill && junction_api_key_configured(false) &&
		OidIsValid(get_extension_oid("junction", true));
}

/* SPI_connect, or an error naming what the connection was for. */
static void
spi_connect(const char *what)
{
	int			rc = SPI_connect();

	if (rc != SPI_OK_CONNECT)
		elog(ERROR, "junction: SPI_connect failed for %s: %s", what, SPI_result_code_string(rc));
}

/* SPI_finish, or an error naming what the connection was for. */
static void
spi_finish(const char *what)
{
	int			rc = SPI_finish();

	if (rc != SPI_OK_FINISH)
		elog(ERROR, "junction: SPI_finish failed after %s: %s", what, SPI_result_code_string(rc));
}

/* Put jobs left running by a crash back to pending; false while backfills cannot run. */
static bool
backfill_reset_running(void)
{
	bool		done = false;
	int			rc;

	junction_bgw_begin_tx("junction: backfill start");
	if (backfill_enabled())
	{
		spi_connect("the backfill reset");
		if ((rc = SPI_execute(BACKFILL_RESET_SQL, false, 0)) != SPI_OK_SELECT)
			elog(ERROR, "junction: junction._backfill_reset_running did not run: %s",
				 SPI_result_code_string(rc));
		spi_finish("the backfill reset");
		done = true;
	}
	junction_bgw_commit_tx();
	return done;
}

/* Claim one job in its own transaction; returns it as jsonb text (in keep), or NULL. */
static char *
backfill_claim(MemoryContext keep)
{
	char	   *job = NULL;
	int			rc;

	junction_bgw_begin_tx("junction: claiming a backfill");
	if (backfill_enabled())
	{
		spi_connect("a backfill claim");
		if ((rc = SPI_execute(BACKFILL_CLAIM_SQL, false, 1)) != SPI_OK_SELECT)
			elog(ERROR, "junction: junction._backfill_claim did not run: %s",
				 SPI_result_code_string(rc));
		if (SPI_processed == 1)
		{
			char	   *v = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

			if (v)
				job = MemoryContextStrdup(keep, v);
		}
		spi_finish("a backfill claim");
	}
	junction_bgw_commit_tx();
	return job;
}

/*
 * Run one SQL statement with text arguments in its own transaction; returns its first column
 * as a boolean (false when null or absent).
 */
static bool
run_job_sql(const char *activity, const char *sql, int nargs, const char **args)
{
	Oid			types[3] = {TEXTOID, TEXTOID, TEXTOID};
	Datum		values[3];
	bool		result = false;
	int			i;
	int			rc;

	Assert(nargs <= lengthof(values));
	junction_bgw_begin_tx(activity);
	spi_connect(activity);
	for (i = 0; i < nargs; i++)
		values[i] = CStringGetTextDatum(args[i]);
	if ((rc = SPI_execute_with_args(sql, nargs, types, values, NULL, false, 0)) != SPI_OK_SELECT)
		elog(ERROR, "junction: backfill statement failed (%s): %s",
			 SPI_result_code_string(rc), sql);
	if (SPI_processed == 1 && SPI_tuptable->tupdesc->natts >= 1 &&
		SPI_gettypeid(SPI_tuptable->tupdesc, 1) == BOOLOID)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

		result = !isnull && DatumGetBool(d);
	}
	spi_finish(activity);
	junction_bgw_commit_tx();
	return result;
}

/* Transient errors (a deadlock, a cancel, a lost connection) in a row before one counts as a failure. */
#define BACKFILL_TRANSIENT_RETRIES 5

/*
 * Run a claimed job step by step, each step (one page and its checkpoint) in its own
 * transaction, until it needs no further step; on any error record it (retry later or failed)
 * and go on.  A transient error (junction_bgw_retryable) rolls back only the step, which is run
 * again after a pause, up to BACKFILL_TRANSIENT_RETRIES times in a row, before it is recorded.
 * Interrupts are served between steps: a SIGTERM leaves the job running at its checkpoint, and
 * the next worker start resumes it.
 */
static void
backfill_run(const char *job)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile int transient = 0;
	volatile bool done = false;

	while (!done)
	{
		PG_TRY();
		{
			while (!run_job_sql("junction: running a backfill", BACKFILL_STEP_SQL, 1, &job))
			{
				junction_bgw_heartbeat(1, 0);
				transient = 0;
				junction_bgw_check_interrupts();
			}
			junction_bgw_heartbeat(1, 0);
			done = true;
		}
		PG_CATCH();
		{
			ErrorData  *edata;
			const char *args[3];

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			FlushErrorState();
			AbortOutOfAnyTransaction();
			MemoryContextSwitchTo(cxt);
			if (edata->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN || ProcDiePending)
				ReThrowError(edata);	/* the error stack was flushed: throw our copy */
			if (junction_bgw_retryable(edata->sqlerrcode) && transient < BACKFILL_TRANSIENT_RETRIES)
			{
				transient++;
				junction_bgw_log_and_pause(edata, "a backfill step", transient);
			}
			else
			{
				args[0] = job;
				args[1] = edata->message ? edata->message : "unknown error";
				args[2] = unpack_sql_state(edata->sqlerrcode);
				ereport(LOG, (errmsg("junction backfill failed: %s", args[1])));
				(void) run_job_sql("junction: recording a failed backfill", BACKFILL_FAILED_SQL, 3, args);
				done = true;
			}
			FreeErrorData(edata);
		}
		PG_END_TRY();
	}
}

/* Entry point of a backfill worker (bgw_main_arg: its slot, from JUNCTION_BACKFILL_SLOT on). */
void
junction_backfill_main(Datum arg)
{
	MemoryContext loop_cxt;
	static bool reset_done = false; /* static: kept across a longjmp out of the claim */
	volatile int failures = 0;

	junction_bgw_start(DatumGetInt32(arg), "junction backfill");
	junction_prefetch_across_commit = true;	/* a step's prefetch is the next step's page */
	/* as in the inbox workers: the upserts queue junction.daily's recomputation, which the inbox
	 * workers do coalesced, so a page's commit does not wait for it */
	SetConfigOption("junction.daily_defer", "on", PGC_SUSET, PGC_S_OVERRIDE);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "junction backfill",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		char	   *volatile job = NULL;

		MemoryContextReset(loop_cxt);
		junction_bgw_heartbeat(0, 0);
		PG_TRY();
		{
			/* in here, so that a cancel while idle is caught like any other */
			junction_bgw_check_interrupts();
			if (!reset_done)
				reset_done = backfill_reset_running();
			if (reset_done)
				job = backfill_claim(loop_cxt);
			failures = 0;
		}
		PG_CATCH();
		{
			/* a transient error in the claim: roll back, pause, claim again */
			junction_bgw_retry_or_rethrow(loop_cxt, "a backfill claim (or the idle wait)", ++failures);
			job = NULL;
		}
		PG_END_TRY();
		if (failures > 0)
			continue;			/* paused already: claim again */
		if (job != NULL)
		{
			MemoryContext old = MemoryContextSwitchTo(loop_cxt);

			backfill_run(job);
			MemoryContextSwitchTo(old);
			continue;
		}
		junction_bgw_wait();
	}
}
