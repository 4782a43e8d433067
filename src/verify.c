/*
 * verify.c — SQL functions around the signature core: junction_verify_webhook,
 * junction_webhook_is_valid, junction_sign_webhook, junction._secret_is_valid.
 */
#include "postgres.h"

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "junction.h"
#include "signature.h"

PG_FUNCTION_INFO_V1(junction_verify_webhook);
PG_FUNCTION_INFO_V1(junction_webhook_is_valid);
PG_FUNCTION_INFO_V1(junction_sign_webhook);
PG_FUNCTION_INFO_V1(junction_secret_is_valid);

/* Per-call-site cache: the keyset of the last secret text seen. */
typedef struct KeysetCache
{
	MemoryContextCallback cb;
	text	   *secret;			/* copy in fn_mcxt, NULL if none yet */
	jx_sig_result status;		/* JX_SIG_OK or JX_SIG_INVALID_SECRET */
	jx_keyset	ks;
} KeysetCache;

/* Free the OpenSSL contexts when the cache's memory context goes away. */
static void
keyset_cache_release(void *arg)
{
	KeysetCache *c = (KeysetCache *) arg;

	jx_keyset_free(&c->ks);
}

/* The keyset for this secret text, parsed once per distinct secret per call site. */
static KeysetCache *
keyset_for(FunctionCallInfo fcinfo, text *secret)
{
	KeysetCache *c = (KeysetCache *) fcinfo->flinfo->fn_extra;
	Size		len = VARSIZE_ANY_EXHDR(secret);

	if (c == NULL)
	{
		c = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(KeysetCache));
		c->cb.func = keyset_cache_release;
		c->cb.arg = c;
		MemoryContextRegisterResetCallback(fcinfo->flinfo->fn_mcxt, &c->cb);
		fcinfo->flinfo->fn_extra = c;
	}
	if (c->secret != NULL && VARSIZE_ANY_EXHDR(c->secret) == len &&
		memcmp(VARDATA_ANY(c->secret), VARDATA_ANY(secret), len) == 0)
		return c;

	jx_keyset_free(&c->ks);
	if (c->secret)
		pfree(c->secret);
	c->secret = NULL;
	{
		jx_bytes	s = {VARDATA_ANY(secret), len};

		c->status = jx_keyset_parse(&c->ks, s, NULL);
	}
	c->secret = (text *) MemoryContextAlloc(fcinfo->flinfo->fn_mcxt, VARSIZE_ANY(secret));
	memcpy(c->secret, secret, VARSIZE_ANY(secret));
	return c;
}

/* Pick the signature headers out of a jsonb object (names as sent). */
void
junction_headers_from_jsonb(Jsonb *headers, jx_sig_headers *out)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	unsigned	from_svix = 0;
	jx_bytes	name = {NULL, 0};

	memset(out, 0, sizeof(*out));
	if (!JB_ROOT_IS_OBJECT(headers))
		return;
	it = JsonbIteratorInit(&headers->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			name.data = v.val.string.val;
			name.len = v.val.string.len;
		}
		else if (tok == WJB_VALUE && name.data != NULL)
		{
			if (v.type == jbvString)
			{
				jx_bytes	value = {v.val.string.val, (size_t) v.val.string.len};

				jx_pick_header(name, value, out, &from_svix);
			}
			name.data = NULL;
		}
	}
}

/* Whole seconds since the Unix epoch, rounded down. */
int64
junction_unix_seconds(TimestampTz t)
{
	int64		s;

	if (TIMESTAMP_NOT_FINITE(t))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("verification time must be finite")));
	s = t / USECS_PER_SEC;
	if (t % USECS_PER_SEC < 0)
		s--;
	return s + (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY;
}

/* An interval as whole seconds (30-day months), rejecting negative values. */
static int64
tolerance_seconds(Interval *iv)
{
	int64		us = iv->time + ((int64) iv->day + (int64) iv->month * DAYS_PER_MONTH) * USECS_PER_DAY;

	if (us < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("tolerance must not be negative")));
	return us / USECS_PER_SEC;
}

/* Shared body of junction_verify_webhook and junction_webhook_is_valid. */
static jx_sig_result
verify_args(FunctionCallInfo fcinfo)
{
	text	   *secret = PG_GETARG_TEXT_PP(0);
	Jsonb	   *headers = PG_GETARG_JSONB_P(1);
	text	   *body = PG_GETARG_TEXT_PP(2);
	TimestampTz at = PG_GETARG_TIMESTAMPTZ(3);
	Interval   *tolerance = PG_GETARG_INTERVAL_P(4);
	KeysetCache *c;
	jx_sig_headers h;
	jx_bytes	b = {VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body)};
	int64		now = junction_unix_seconds(at);
	int64		tol = tolerance_seconds(tolerance);

	c = keyset_for(fcinfo, secret);
	if (c->status != JX_SIG_OK)
		return JX_SIG_INVALID_SECRET;
	junction_headers_from_jsonb(headers, &h);
	return jx_verify(&c->ks, &h, b, now, tol);
}

/* junction_verify_webhook(secret, headers, body, at, tolerance) -> text */
Datum
junction_verify_webhook(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(jx_sig_result_name(verify_args(fcinfo))));
}

/* junction_webhook_is_valid(secret, headers, body, at, tolerance) -> boolean */
Datum
junction_webhook_is_valid(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(verify_args(fcinfo) == JX_SIG_OK);
}

/* junction_sign_webhook(secret, msg_id, timestamp, body) -> 'v1,<base64>' */
Datum
junction_sign_webhook(PG_FUNCTION_ARGS)
{
	text	   *secret = PG_GETARG_TEXT_PP(0);
	text	   *msg_id = PG_GETARG_TEXT_PP(1);
	int64		ts = PG_GETARG_INT64(2);
	text	   *body = PG_GETARG_TEXT_PP(3);
	KeysetCache *c = keyset_for(fcinfo, secret);
	jx_bytes	id = {VARDATA_ANY(msg_id), VARSIZE_ANY_EXHDR(msg_id)};
	jx_bytes	b = {VARDATA_ANY(body), VARSIZE_ANY_EXHDR(body)};
	char		out[JX_SIG_B64_LEN + 4];

	if (c->status != JX_SIG_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid webhook secret"),
				 errhint("A secret is \"whsec_\" followed by padded standard base64.")));
	if (ts < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("timestamp must not be negative: %lld", (long long) ts)));
	if (jx_sign(&c->ks, id, ts, b, out) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute HMAC-SHA256")));
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

/* junction._secret_is_valid(secret) -> boolean: one well-formed secret */
Datum
junction_secret_is_valid(PG_FUNCTION_ARGS)
{
	text	   *secret = PG_GETARG_TEXT_PP(0);
	jx_bytes	s = {VARDATA_ANY(secret), VARSIZE_ANY_EXHDR(secret)};

	PG_RETURN_BOOL(jx_secret_is_valid(s));
}
