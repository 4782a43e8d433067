/*
 * drain.c — one batch of inbox work: claim pending rows (FOR UPDATE SKIP
 * LOCKED) up to junction.batch_size rows and junction.batch_bytes bytes,
 * check each in C (the row's own fields, signature, encoding, JSON shape),
 * type the good ones set-based in a subtransaction, and bisect a batch that
 * fails, so a poison row is quarantined with its reason and the rest commit.
 * Nothing a row holds can fail the batch: whatever it trips ends in its
 * quarantine.  Shared by the background worker and junction_process_inbox().
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "junction.h"

PG_FUNCTION_INFO_V1(junction_process_inbox);

/* Rows fetched from the claim cursor at a time (tuples hold toast pointers, not bodies). */
#define CLAIM_CHUNK 32
/* Longest quarantine reason stored (a JSON error can quote a 20 MB token). */
#define REASON_MAX 1000
/* Longest svix-id accepted (Svix sends ~31 bytes; events.svix_id is a B-tree key). */
#define SVIX_ID_MAX 256

static SPIPlanPtr secrets_plan = NULL;
static SPIPlanPtr claim_plan = NULL;
static SPIPlanPtr apply_plan = NULL;
static SPIPlanPtr quarantine_plan = NULL;
static SPIPlanPtr context_plan = NULL;

/* One claimed delivery, as the drain tracks it. */
typedef struct Claimed
{
	int64		id;
	char	   *svix_id;		/* verified message id, NULL if not verified */
	const char *error;			/* quarantine reason, NULL if fine */
	char		sqlstate[6];
} Claimed;

/* Record why a row is quarantined (message clipped to REASON_MAX bytes, in cxt). */
static void
set_error(Claimed *row, MemoryContext cxt, const char *sqlstate, const char *message)
{
	int			len = strlen(message);

	if (len > REASON_MAX)
	{
		len = pg_mbcliplen(message, len, REASON_MAX);
		row->error = MemoryContextStrdup(cxt, psprintf("%.*s...", len, message));
	}
	else
		row->error = MemoryContextStrdup(cxt, message);
	strlcpy(row->sqlstate, sqlstate, sizeof(row->sqlstate));
	row->svix_id = NULL;
}

/* Forget prepared plans (after the extension was dropped and re-created). */
void
junction_drain_reset_plans(void)
{
	SPIPlanPtr *plans[] = {&secrets_plan, &claim_plan, &apply_plan, &quarantine_plan, &context_plan};
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
		if (SPI_keepplan(p) != 0)
			elog(ERROR, "junction: SPI_keepplan failed: %s", sql);
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

/*
 * Errors that say nothing about the row: the batch is retried rather than a row
 * quarantined.  A deadlock or serialization failure (class 40), a cancel (57014;
 * also how Citus ends the victim of a distributed deadlock), a lost connection
 * (class 08: a Citus node restarting), lock_timeout (55P03), insufficient
 * resources (53), operator intervention (57) and system errors (58).
 */
bool
junction_error_is_transient(int sqlerrcode)
{
	char		cls0 = PGUNSIXBIT(sqlerrcode);
	char		cls1 = PGUNSIXBIT(sqlerrcode >> 6);

	return (cls0 == '4' && cls1 == '0') ||	/* transaction rollback */
		(cls0 == '0' && cls1 == '8') || /* connection exception */
		sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE ||
		(cls0 == '5' && cls1 == '3') || /* insufficient resources */
		(cls0 == '5' && cls1 == '7') || /* operator intervention, cancel */
		(cls0 == '5' && cls1 == '8');	/* system error */
}

/*
 * In the PG_CATCH of a subtransaction started with BeginInternalSubTransaction:
 * re-throw a transient error (the whole batch is retried), else roll the
 * subtransaction back, restore the caller's context and resource owner, and
 * return a copy of the error.
 */
static ErrorData *
subxact_caught(MemoryContext oldcxt, ResourceOwner oldowner)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(oldcxt);
	edata = CopyErrorData();
	if (junction_error_is_transient(edata->sqlerrcode))
		PG_RE_THROW();
	FlushErrorState();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = oldowner;
	return edata;
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

		edata = subxact_caught(oldcxt, oldowner);
		*edata_out = edata;
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

/*
 * The quarantine reason for row id, whose typing raised message: the error with
 * the event type and the JSON path of the field at fault, from
 * junction._typing_error_context, in its own subtransaction.  If that cannot
 * be had (the function itself fails), the bare message.  Result in cxt.
 */
static char *
typing_reason(int64 id, const char *message, MemoryContext cxt)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	char	   *volatile reason = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		Datum		args[2];
		Oid			types[2] = {INT8OID, TEXTOID};
		bool		isnull;
		Datum		d;

		keep_plan(&context_plan, "SELECT junction._typing_error_context($1, $2)", 2, types);
		args[0] = Int64GetDatum(id);
		args[1] = CStringGetTextDatum(message);
		if (SPI_execute_plan(context_plan, args, NULL, false, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
		{
			d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
			if (!isnull)
				reason = MemoryContextStrdup(cxt, TextDatumGetCString(d));
		}
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		FreeErrorData(subxact_caught(oldcxt, oldowner));
	}
	PG_END_TRY();
	return reason ? reason : MemoryContextStrdup(cxt, message);
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

/* What the JSON pre-check learns about a body's top level. */
typedef struct BodyShape
{
	JsonLexContext *lex;
	JsonTokenType top;			/* first token: object/array start or a scalar */
	bool		has_event_type;
	JsonTokenType event_type;	/* first token of the (last) top-level event_type value */
} BodyShape;

static void
shape_object_start(void *state)
{
	BodyShape  *sh = (BodyShape *) state;

	if (sh->lex->lex_level == 0)
		sh->top = JSON_TOKEN_OBJECT_START;
}

static void
shape_array_start(void *state)
{
	BodyShape  *sh = (BodyShape *) state;

	if (sh->lex->lex_level == 0)
		sh->top = JSON_TOKEN_ARRAY_START;
}

/* A top-level field starts: the lexer's current token is the first one of its value. */
static void
shape_field_start(void *state, char *fname, bool isnull)
{
	BodyShape  *sh = (BodyShape *) state;

	if (sh->lex->lex_level == 1 && fname != NULL && strcmp(fname, "event_type") == 0)
	{
		/* jsonb keeps the last of duplicate keys, and so do we */
		sh->has_event_type = true;
		sh->event_type = sh->lex->token_type;
	}
}

/* jsonb_typeof's name for a value starting with this token. */
static const char *
json_type_name(JsonTokenType t)
{
	switch (t)
	{
		case JSON_TOKEN_OBJECT_START:
			return "object";
		case JSON_TOKEN_ARRAY_START:
			return "array";
		case JSON_TOKEN_STRING:
			return "string";
		case JSON_TOKEN_NUMBER:
			return "number";
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			return "boolean";
		case JSON_TOKEN_NULL:
			return "null";
		default:
			return "unknown";
	}
}

/*
 * What C can see before typing: the body is valid JSON, an object, with a
 * string event_type (the same rules, reasons and SQLSTATEs as the checks in
 * junction._apply_deliveries, which stay as the second line).  Returns NULL
 * when fine, else the reason, with *sqlstate set.  May ereport (stack depth,
 * out of memory): the caller runs it in a subtransaction.
 */
static char *
check_body_json(char *data, int len, const char **sqlstate)
{
	BodyShape	sh;
	JsonSemAction sem;
	JsonParseErrorType err;

	memset(&sh, 0, sizeof(sh));
	memset(&sem, 0, sizeof(sem));
	sh.lex = makeJsonLexContextCstringLen(data, len, GetDatabaseEncoding(), true);
	sh.top = JSON_TOKEN_INVALID;
	sem.semstate = &sh;
	sem.object_start = shape_object_start;
	sem.array_start = shape_array_start;
	sem.object_field_start = shape_field_start;
	err = pg_parse_json(sh.lex, &sem);
	if (err != JSON_SUCCESS)
	{
		/* the SQLSTATEs jsonb_in would raise for the same input */
		*sqlstate = (err == JSON_UNICODE_CODE_POINT_ZERO || err == JSON_UNICODE_HIGH_ESCAPE)
			? "22P05" : "22P02";
		return psprintf("webhook body is not valid JSON: %s", json_errdetail(err, sh.lex));
	}
	if (sh.top == JSON_TOKEN_INVALID)
	{
		/* a scalar: its type is the first token's */
		JsonLexContext *lex = makeJsonLexContextCstringLen(data, len, GetDatabaseEncoding(), false);

		if (json_lex(lex) == JSON_SUCCESS)
			sh.top = lex->token_type;
	}
	if (sh.top != JSON_TOKEN_OBJECT_START)
	{
		*sqlstate = "22023";
		return psprintf("webhook body is a JSON %s, not an object", json_type_name(sh.top));
	}
	if (!sh.has_event_type || sh.event_type == JSON_TOKEN_NULL)
	{
		*sqlstate = "23502";
		return pstrdup("webhook body has no event_type");
	}
	if (sh.event_type != JSON_TOKEN_STRING)
	{
		*sqlstate = "22023";
		return psprintf("event_type must be a string, not %s", json_type_name(sh.event_type));
	}
	return NULL;
}

/* Where text stops being valid in the encoding we store; -1 if it is all valid. */
static int
invalid_encoding_at(const char *data, int len, int encoding)
{
	int			ok = pg_encoding_verifymbstr(encoding, data, len);

	return ok < len ? ok : -1;
}

/* The encoding bodies must be in: the database's, or UTF-8 (JSON's) in a SQL_ASCII database. */
static int
body_encoding(void)
{
	int			enc = GetDatabaseEncoding();

	return enc == PG_SQL_ASCII ? PG_UTF8 : enc;
}

/* Reason for bytes that are not valid in the encoding, quoting up to 4 of them in hex. */
static char *
encoding_reason(const char *what, const char *data, int len, int at, int encoding)
{
	StringInfoData s;
	int			i;

	initStringInfo(&s);
	appendStringInfo(&s, "%s is not valid %s: invalid byte sequence at byte %d:", what,
					 pg_encoding_to_char(encoding), at);
	for (i = at; i < len && i < at + 4; i++)
		appendStringInfo(&s, " 0x%02x", (unsigned char) data[i]);
	return s.data;
}

/*
 * Check one claimed tuple in C, in work_cxt (reset by the caller): the row's
 * own fields, its signature, the encoding of what we will store, the JSON
 * shape of the body.  Fills row->svix_id (in keep_cxt) or the row's error.
 * Row problems become quarantine reasons; anything thrown (a damaged toast
 * value, stack depth, memory) is caught by the caller's subtransaction.
 */
static void
verify_row(Claimed *row, HeapTuple tup, TupleDesc desc, const jx_keyset *ks,
		   MemoryContext keep_cxt)
{
	bool		isnull;
	Jsonb	   *headers;
	text	   *body;
	TimestampTz received_at;
	jx_sig_headers h;
	jx_sig_result r;
	jx_bytes	b;
	int			at;
	const char *state;
	char	   *reason;
	int			enc = body_encoding();
	Datum		headers_d,
				body_d;

	row->id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	/* the table's constraints keep these out; rows from before them, or without them, still come here */
	headers_d = SPI_getbinval(tup, desc, 2, &isnull);
	if (isnull)
	{
		set_error(row, keep_cxt, "23502", "inbox row has no headers (headers is null)");
		return;
	}
	body_d = SPI_getbinval(tup, desc, 3, &isnull);
	if (isnull)
	{
		set_error(row, keep_cxt, "23502", "inbox row has no body (body is null)");
		return;
	}
	received_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
	if (isnull)
	{
		set_error(row, keep_cxt, "23502", "inbox row has no received_at (received_at is null)");
		return;
	}
	headers = DatumGetJsonbP(headers_d);
	body = DatumGetTextPP(body_d);
	if (TIMESTAMP_NOT_FINITE(received_at))
	{
		set_error(row, keep_cxt, "22008",
				  psprintf("received_at is %s: the svix-timestamp cannot be checked against it",
						   TIMESTAMP_IS_NOBEGIN(received_at) ? "-infinity" : "infinity"));
		return;
	}
	if (!JB_ROOT_IS_OBJECT(headers) || JB_ROOT_IS_SCALAR(headers))
	{
		set_error(row, keep_cxt, "22023",
				  psprintf("headers must be a JSON object, not %s",
						   JB_ROOT_IS_SCALAR(headers) ? "a scalar" : "an array"));
		return;
	}

	junction_headers_from_jsonb(headers, &h);
	b.data = VARDATA_ANY(body);
	b.len = VARSIZE_ANY_EXHDR(body);
	r = jx_verify(ks, &h, b, junction_unix_seconds(received_at),
				  junction_signature_tolerance_s);
	if (r != JX_SIG_OK)
	{
		set_error(row, keep_cxt, "28000",
				  psprintf("webhook signature check failed: %s", jx_sig_result_name(r)));
		return;
	}

	/* signed: now what we would store and parse */
	if (h.id.len > SVIX_ID_MAX)
	{
		set_error(row, keep_cxt, "22001",
				  psprintf("svix-id header is %zu bytes long, more than %d", h.id.len, SVIX_ID_MAX));
		return;
	}
	if ((at = invalid_encoding_at(h.id.data, h.id.len, enc)) >= 0)
	{
		set_error(row, keep_cxt, "22021",
				  encoding_reason("svix-id header", h.id.data, h.id.len, at, enc));
		return;
	}
	if ((at = invalid_encoding_at(b.data, b.len, enc)) >= 0)
	{
		set_error(row, keep_cxt, "22021", encoding_reason("webhook body", b.data, b.len, at, enc));
		return;
	}
	if ((reason = check_body_json((char *) b.data, b.len, &state)) != NULL)
	{
		set_error(row, keep_cxt, state, reason);
		return;
	}
	row->svix_id = MemoryContextStrdup(keep_cxt, pnstrdup(h.id.data, h.id.len));
}

/*
 * Check n tuples of a fetched chunk: all in one read-only subtransaction
 * (no XID), and, if anything throws, again one row per subtransaction so the
 * row that threw is quarantined with its error and the others go on.
 */
static void
verify_rows(Claimed *rows, SPITupleTable *tt, int n, const jx_keyset *ks,
			MemoryContext keep_cxt, MemoryContext work_cxt)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;
	volatile int j;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		int			i;

		for (i = 0; i < n; i++)
		{
			MemoryContextSwitchTo(work_cxt);
			verify_row(&rows[i], tt->vals[i], tt->tupdesc, ks, keep_cxt);
			MemoryContextReset(work_cxt);
		}
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		edata = subxact_caught(oldcxt, oldowner);
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	MemoryContextReset(work_cxt);
	if (ok)
		return;

	for (j = 0; j < n; j++)
	{
		Claimed    *row = &rows[j];

		memset(row, 0, sizeof(*row));
		BeginInternalSubTransaction(NULL);
		PG_TRY();
		{
			MemoryContextSwitchTo(work_cxt);
			verify_row(row, tt->vals[j], tt->tupdesc, ks, keep_cxt);
			ReleaseCurrentSubTransaction();
			MemoryContextSwitchTo(oldcxt);
			CurrentResourceOwner = oldowner;
		}
		PG_CATCH();
		{
			ErrorData  *edata;
			bool		isnull;

			edata = subxact_caught(oldcxt, oldowner);
			row->id = DatumGetInt64(SPI_getbinval(tt->vals[j], tt->tupdesc, 1, &isnull));
			set_error(row, keep_cxt, unpack_sql_state(edata->sqlerrcode),
					  edata->message ? edata->message : "unknown error");
			FreeErrorData(edata);
		}
		PG_END_TRY();
		MemoryContextReset(work_cxt);
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * Type rows[0..n): the whole range in one subtransaction; if that raises,
 * each half on its own, down to single rows, which are quarantined with their
 * own error.  k bad rows in a batch of n cost about 2·k·log2(n) subtransactions
 * instead of n; a half that succeeds stays committed.  Transient errors are
 * re-thrown by apply_in_subxact.
 */
static void
apply_bisect(Claimed *rows, int n, int *subxacts)
{
	ErrorData  *edata = NULL;
	int			k = 0,
				i,
				half,
				mid;

	for (i = 0; i < n; i++)
		if (rows[i].svix_id != NULL && rows[i].error == NULL)
			k++;
	if (k == 0)
		return;
	(*subxacts)++;
	if (apply_in_subxact(rows, n, &edata))
		return;
	CHECK_FOR_INTERRUPTS();
	if (k == 1)
	{
		for (i = 0; i < n; i++)
		{
			if (rows[i].svix_id != NULL && rows[i].error == NULL)
			{
				set_error(&rows[i], CurrentMemoryContext, unpack_sql_state(edata->sqlerrcode),
						  typing_reason(rows[i].id,
										edata->message ? edata->message : "unknown error",
										CurrentMemoryContext));
				break;
			}
		}
		FreeErrorData(edata);
		return;
	}
	FreeErrorData(edata);
	/* split where half of the typable rows lie on each side */
	half = k / 2;
	for (mid = 0, i = 0; mid < n; mid++)
	{
		if (rows[mid].svix_id != NULL && rows[mid].error == NULL && ++i > half)
			break;
	}
	apply_bisect(rows, mid, subxacts);
	apply_bisect(rows + mid, n - mid, subxacts);
}

/* Claim and handle one batch.  Caller provides a transaction and snapshot. */
JunctionDrainResult
junction_drain_batch(int max_rows)
{
	JunctionDrainResult res = {0};
	MemoryContext batch_cxt,
				work_cxt,
				oldcxt;
	jx_keyset	ks;
	Claimed    *rows;
	volatile int n = 0;
	int			i;
	Portal		cur;
	Datum		limit;
	Oid			int4type = INT4OID;
	volatile int64 bytes = 0;
	int			rc;

	if (max_rows <= 0)
		return res;
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "junction batch",
									  ALLOCSET_DEFAULT_SIZES);
	work_cxt = AllocSetContextCreate(batch_cxt, "junction row check",
									 ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(batch_cxt);
	if ((rc = SPI_connect()) != SPI_OK_CONNECT)
		elog(ERROR, "junction: SPI_connect failed for an inbox batch: %s", SPI_result_code_string(rc));
	ks.nkeys = 0;
	PG_TRY();
	{
		if (load_secrets(&ks) == 0)
			res.no_secret = true;
		else
		{
			/* sizes from the toast headers: nothing is detoasted to count it */
			keep_plan(&claim_plan,
					  "SELECT id, headers, body, received_at, "
					  "coalesce(octet_length(body)::bigint, 0) + coalesce(pg_column_size(headers)::bigint, 0) "
					  "FROM junction.inbox "
					  "WHERE status = 'pending' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
					  1, &int4type);
			rows = MemoryContextAllocZero(batch_cxt, sizeof(Claimed) * max_rows);
			limit = Int32GetDatum(max_rows);
			cur = SPI_cursor_open(NULL, claim_plan, &limit, NULL, false);
			if (cur == NULL)
				elog(ERROR, "junction: could not open the inbox claim cursor: %s",
					 SPI_result_code_string(SPI_result));
			while (!res.full)
			{
				SPITupleTable *tt;
				int			take = 0;

				SPI_cursor_fetch(cur, true, Min(CLAIM_CHUNK, max_rows - n));
				if (SPI_processed == 0)
					break;
				tt = SPI_tuptable;
				/* rows up to the byte limit; the first row of a batch is taken whatever its size */
				for (i = 0; i < (int) SPI_processed && n + take < max_rows; i++)
				{
					bool		isnull;
					int64		len = DatumGetInt64(SPI_getbinval(tt->vals[i], tt->tupdesc, 5, &isnull));

					if (n + take > 0 && bytes + len > junction_batch_bytes)
					{
						res.full = true;
						break;
					}
					bytes += len;
					take++;
				}
				MemoryContextSwitchTo(batch_cxt);
				verify_rows(&rows[n], tt, take, &ks, batch_cxt, work_cxt);
				n += take;
				SPI_freetuptable(tt);
				if (n >= max_rows)
					res.full = true;
				CHECK_FOR_INTERRUPTS();
			}
			SPI_cursor_close(cur);
			MemoryContextSwitchTo(batch_cxt);
			res.claimed = n;

			/* the whole checked batch at once; bisected if that fails */
			apply_bisect(rows, n, &res.subxacts);
			quarantine(rows, n);
			for (i = 0; i < n; i++)
			{
				if (rows[i].error)
					res.quarantined++;
				else
					res.processed++;
			}
			if (res.subxacts > 1)
				elog(DEBUG1, "junction: batch of %d rows (%lld bytes): %d quarantined, %d typing subtransactions",
					 n, (long long) bytes, res.quarantined, res.subxacts);
		}
	}
	PG_FINALLY();
	{
		jx_keyset_free(&ks);
	}
	PG_END_TRY();
	if ((rc = SPI_finish()) != SPI_OK_FINISH)
		elog(ERROR, "junction: SPI_finish failed after an inbox batch: %s", SPI_result_code_string(rc));
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
