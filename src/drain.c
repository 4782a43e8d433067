/*
 * drain.c — one batch of inbox work: claim pending rows (FOR UPDATE SKIP
 * LOCKED), verify each signature in C, type the verified ones set-based in a
 * subtransaction, and fall back to one subtransaction per row when the batch
 * fails, so a poison row is quarantined with its reason and the rest commit.
 * Shared by the background worker and junction_process_inbox().
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "junction.h"

PG_FUNCTION_INFO_V1(junction_process_inbox);

/* Rows fetched from the claim cursor at a time (bounds memory for huge bodies). */
#define CLAIM_CHUNK 32

static SPIPlanPtr secrets_plan = NULL;
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr apply_plan = NULL;
static SPIPlanPtr quarantine_plan = NULL;

/* One claimed delivery, as the drain tracks it. */
typedef struct Claimed
{
	int64		id;
	char	   *svix_id;		/* verified message id, NULL if not verified */
	const char *error;			/* quarantine reason, NULL if fine */
	char		sqlstate[6];
} Claimed;

/* Forget prepared plans (after the extension was dropped and re-created). */
void
junction_drain_reset_plans(void)
{
	SPIPlanPtr *plans[] = {&secrets_plan, &claim_plan, &apply_plan, &quarantine_plan};
	size_t		i;

	for (i = 0; i < lengthof(plans); i++)
	{
		if (*plans[i])
			SPI_freeplan(*plans[i]);
		*plans[i] = NULL;
	}
}

/* Prepare and keep a plan once per backend. */
static SPIPlanPtr
keep_plan(SPIPlanPtr *slot, const char *sql, int nargs, Oid *types)
{
	if (*slot == NULL)
	{
		SPIPlanPtr	p = SPI_prepare(sql, nargs, types);

		if (p == NULL)
			elog(ERROR, "junction: SPI_prepare failed (%s): %s",
				 SPI_result_code_string(SPI_result), sql);
		SPI_keepplan(p);
		*slot = p;
	}
	return *slot;
}

/* Load every active secret into ks; returns the number of keys. */
static int
load_secrets(jx_keyset *ks)
{
	uint64		i;

	keep_plan(&secrets_plan,
			  "SELECT secret FROM junction.webhook_secrets "
			  "WHERE expires_at IS NULL OR expires_at > now() ORDER BY created_at DESC",
			  0, NULL);
	if (SPI_execute_plan(secrets_plan, NULL, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "junction: could not read junction.webhook_secrets");
	ks->nkeys = 0;
	for (i = 0; i < SPI_processed && ks->nkeys < JX_MAX_KEYS; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);
		text	   *t;
		jx_bytes	s;

		if (isnull)
			continue;
		t = DatumGetTextPP(d);
		s.data = VARDATA_ANY(t);
		s.len = VARSIZE_ANY_EXHDR(t);
		/* the table's CHECK keeps malformed secrets out; skip defensively */
		(void) jx_keyset_add(ks, s);
	}
	SPI_freetuptable(SPI_tuptable);
	return ks->nkeys;
}

/* Errors that say nothing about the row: retry the batch rather than quarantine. */
static bool
error_is_transient(int sqlerrcode)
{
	char		cls0 = PGUNSIXBIT(sqlerrcode);
	char		cls1 = PGUNSIXBIT(sqlerrcode >> 6);

	return (cls0 == '4' && cls1 == '0') ||	/* transaction rollback */
		(cls0 == '5' && cls1 == '3') || /* insufficient resources */
		(cls0 == '5' && cls1 == '7') || /* operator intervention, cancel */
		(cls0 == '5' && cls1 == '8');	/* system error */
}

/*
 * Run junction._apply_deliveries over rows[from..to) with a verified svix id,
 * in a subtransaction.  On success returns true; on a row-level error fills
 * *edata_out and returns false (the subtransaction is rolled back).
 */
static bool
apply_in_subxact(Claimed *rows, int n, ErrorData **edata_out)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *sids = palloc(sizeof(Datum) * n);
	int			k = 0,
				i;
	bool		ok = true;

	for (i = 0; i < n; i++)
	{
		if (rows[i].svix_id == NULL || rows[i].error != NULL)
			continue;
		ids[k] = Int64GetDatum(rows[i].id);
		sids[k] = CStringGetTextDatum(rows[i].svix_id);
		k++;
	}
	if (k == 0)
		return true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		Datum		args[2];
		Oid			types[2] = {INT8ARRAYOID, TEXTARRAYOID};

		keep_plan(&apply_plan, "SELECT junction._apply_deliveries($1, $2)", 2, types);
		args[0] = PointerGetDatum(construct_array(ids, k, INT8OID, 8, true, TYPALIGN_DOUBLE));
		args[1] = PointerGetDatum(construct_array(sids, k, TEXTOID, -1, false, TYPALIGN_INT));
		if (SPI_execute_plan(apply_plan, args, NULL, false, 0) != SPI_OK_SELECT)
			elog(ERROR, "junction: junction._apply_deliveries did not run");
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (error_is_transient(edata->sqlerrcode))
			PG_RE_THROW();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		*edata_out = edata;
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/* Mark the rows that carry an error as quarantined, in one statement. */
static void
quarantine(Claimed *rows, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *errs = palloc(sizeof(Datum) * n);
	Datum	   *states = palloc(sizeof(Datum) * n);
	Datum		args[3];
	Oid			types[3] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	int			k = 0,
				i;

	for (i = 0; i < n; i++)
	{
		if (rows[i].error == NULL)
			continue;
		ids[k] = Int64GetDatum(rows[i].id);
		errs[k] = CStringGetTextDatum(rows[i].error);
		states[k] = CStringGetTextDatum(rows[i].sqlstate);
		k++;
	}
	if (k == 0)
		return;
	keep_plan(&quarantine_plan,
			  "UPDATE junction.inbox i SET status = 'quarantined', attempts = i.attempts + 1, "
			  "error = u.error, sqlstate = u.sqlstate, processed_at = now() "
			  "FROM unnest($1, $2, $3) AS u(id, error, sqlstate) WHERE i.id = u.id",
			  3, types);
	args[0] = PointerGetDatum(construct_array(ids, k, INT8OID, 8, true, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(errs, k, TEXTOID, -1, false, TYPALIGN_INT));
	args[2] = PointerGetDatum(construct_array(states, k, TEXTOID, -1, false, TYPALIGN_INT));
	if (SPI_execute_plan(quarantine_plan, args, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "junction: could not quarantine inbox rows");
}

/* Verify one claimed tuple; fills the row's svix_id or its error. */
static void
verify_row(Claimed *row, HeapTuple tup, TupleDesc desc, const jx_keyset *ks)
{
	bool		isnull;
	Jsonb	   *headers;
	text	   *body;
	TimestampTz received_at;
	jx_sig_headers h;
	jx_sig_result r;
	jx_bytes	b;

	Datum		headers_datum,
				body_datum;

	row->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	headers_datum = SPI_getbinval(tup, desc, 2, &isnull);
	body_datum = SPI_getbinval(tup, desc, 3, &isnull);
	headers = DatumGetJsonbP(headers_datum);
	body = DatumGetTextPP(body_datum);
	received_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));

	junction_headers_from_jsonb(headers, &h);
	b.data = VARDATA_ANY(body);
	b.len = VARSIZE_ANY_EXHDR(body);
	r = jx_verify(ks, &h, b, junction_unix_seconds(received_at),
				  junction_signature_tolerance_s);
	if (r == JX_SIG_OK)
		row->svix_id = pnstrdup(h.id.data, h.id.len);
	else
	{
		row->error = psprintf("webhook signature check failed: %s", jx_sig_result_name(r));
		strcpy(row->sqlstate, "28000");
	}
	/* detoasted copies live in the batch context: free them now, bodies can be megabytes */
	if ((Pointer) body != DatumGetPointer(body_datum))
		pfree(body);
	if ((Pointer) headers != DatumGetPointer(headers_datum))
		pfree(headers);
}

/* Claim and handle one batch.  Caller provides a transaction and snapshot. */
JunctionDrainResult
junction_drain_batch(int max_rows)
{
	JunctionDrainResult res = {0, 0, 0, false};
	MemoryContext batch_cxt,
				oldcxt;
	jx_keyset	ks;
	Claimed    *rows;
	int			n = 0,
				i;
	Portal		cur;
	Datum		limit;
	Oid			int4type = INT4OID;
	ErrorData  *edata = NULL;

	if (max_rows <= 0)
		return res;
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "junction batch",
									  ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(batch_cxt);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "junction: SPI_connect failed");
	ks.nkeys = 0;
	PG_TRY();
	{
		if (load_secrets(&ks) == 0)
			res.no_secret = true;
		else
		{
			keep_plan(&claim_plan,
					  "SELECT id, headers, body, received_at FROM junction.inbox "
					  "WHERE status = 'pending' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
					  1, &int4type);
			rows = MemoryContextAllocZero(batch_cxt, sizeof(Claimed) * max_rows);
			limit = Int32GetDatum(max_rows);
			cur = SPI_cursor_open(NULL, claim_plan, &limit, NULL, false);
			for (;;)
			{
				SPI_cursor_fetch(cur, true, CLAIM_CHUNK);
				if (SPI_processed == 0)
					break;
				MemoryContextSwitchTo(batch_cxt);
				for (i = 0; i < (int) SPI_processed && n < max_rows; i++)
					verify_row(&rows[n++], SPI_tuptable->vals[i], SPI_tuptable->tupdesc, &ks);
				SPI_freetuptable(SPI_tuptable);
				CHECK_FOR_INTERRUPTS();
			}
			SPI_cursor_close(cur);
			MemoryContextSwitchTo(batch_cxt);
			res.claimed = n;

			/* the whole verified batch at once; row by row if that fails */
			if (!apply_in_subxact(rows, n, &edata))
			{
				for (i = 0; i < n; i++)
				{
					if (rows[i].error != NULL)
						continue;
					edata = NULL;
					if (!apply_in_subxact(&rows[i], 1, &edata))
					{
						rows[i].error = edata->message ? edata->message : "unknown error";
						strlcpy(rows[i].sqlstate, unpack_sql_state(edata->sqlerrcode),
								sizeof(rows[i].sqlstate));
					}
					CHECK_FOR_INTERRUPTS();
				}
			}
			quarantine(rows, n);
			for (i = 0; i < n; i++)
			{
				if (rows[i].error)
					res.quarantined++;
				else
					res.processed++;
			}
		}
	}
	PG_FINALLY();
	{
		jx_keyset_free(&ks);
	}
	PG_END_TRY();
	SPI_finish();
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(batch_cxt);
	return res;
}

/* junction_process_inbox(max_rows) -> rows handled (processed + quarantined) */
Datum
junction_process_inbox(PG_FUNCTION_ARGS)
{
	int			max_rows;
	int			done = 0;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max_rows must not be null"),
				 errhint("Call junction_process_inbox() for the default of 1000 rows.")));
	max_rows = PG_GETARG_INT32(0);
	if (max_rows < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_rows must not be negative: %d", max_rows)));
	while (done < max_rows)
	{
		JunctionDrainResult r = junction_drain_batch(Min(junction_batch_size, max_rows - done));

		if (r.no_secret && done == 0)
			ereport(NOTICE,
					(errmsg("junction: no webhook secret configured; deliveries stay pending"),
					 errhint("INSERT INTO junction.webhook_secrets(secret) VALUES ('whsec_...');")));
		done += r.claimed;
		if (r.claimed == 0)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	PG_RETURN_INT32(done);
}
