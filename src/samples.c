/*
 * samples.c — junction._group_samples(): the samples of one timeseries group {source, data[]},
 * one row per element of data[], typed.
 *
 * This is the per-sample half of junction._upsert_samples (the group-level fields, the dedupe
 * and the INSERT stay in SQL). It walks the group's jsonb once and each sample's keys in one
 * pass, instead of a dozen jsonb operators per sample; webhooks and junction_sync both load through it. The rules, and the error for each
 * bad input, are those of the SQL it replaced:
 *
 *   type            sample ->> 'type', else ''
 *   time            sample ->> 'start', else ->> 'timestamp' (missing: 23502);
 *                   timestamptz, or for floating-time groups the wall clock read as UTC
 *   time_end        sample ->> 'end', the same way
 *   value           a JSON number as float8 when value_kind = 'number'; JSON null or missing:
 *                   null; anything else: 22P02
 *   unit            sample ->> 'unit'
 *   timezone_offset (sample ->> 'timezone_offset')::integer
 *   local_time      floating: the wall clock; else time at UTC + timezone_offset seconds
 *   extra           the keys without a column of their own, plus the group's source extras,
 *                   nulls stripped; null when that is empty
 *
 * Runs with TimeZone = UTC (set by junction._upsert_samples), so a timestamp without an offset
 * suffix is read as UTC.
 *
 * Also here: junction._subxact_room(), which tells junction_sync whether its fast path may open
 * one more subtransaction.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "storage/proc.h"

PG_FUNCTION_INFO_V1(junction_group_samples);
PG_FUNCTION_INFO_V1(junction_subxact_room);

#define NCOLS 9

/* The sample keys that have a column of their own (value only for numeric resources). */
static const char *const column_keys[] = {
	"id", "timestamp", "start", "end", "timezone_offset", "type", "unit", "value"
};
enum
{
	K_ID, K_TIMESTAMP, K_START, K_END, K_TZ, K_TYPE, K_UNIT, K_VALUE
};

/* sample ->> key as a C string (NULL for a missing key or JSON null), as the ->> operator reads it. */
static char *
jbv_cstring(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return NULL;
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		case jbvBinary:
			return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		default:
			elog(ERROR, "unexpected jsonb value type %d", (int) v->type);
	}
	return NULL;				/* not reached */
}

/* The jsonb text of one value (sample -> key), for error messages. */
static char *
jbv_json_text(JsonbValue *v)
{
	if (v->type == jbvBinary)
		return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
	return JsonbToCString(NULL, &JsonbValueToJsonb(v)->root, 0);
}

/* obj -> key into *out; false when the key is missing. */
static bool
get_key(JsonbContainer *obj, const char *key, JsonbValue *out)
{
	return getKeyJsonValueFromContainer(obj, key, strlen(key), out) != NULL;
}

/* The keys of one sample that have a column of their own, read in one pass over the object. */
typedef struct SampleKeys
{
	JsonbValue	v[8];			/* indexed like column_keys */
	bool		found[8];
	int			others;			/* keys without a column (they go to extra) */
} SampleKeys;

/* The index of a key in column_keys, -1 for a key without a column. */
static int
column_key_index(const char *k, int len)
{
	for (int i = 0; i < 8; i++)
		if ((int) strlen(column_keys[i]) == len && memcmp(column_keys[i], k, len) == 0)
			return i;
	return -1;
}

/* Fill sk from one pass over a sample object: the column keys (the first nremovable) and a count of the others. */
static void
read_sample_keys(JsonbContainer *obj, int nremovable, SampleKeys *sk)
{
	JsonbIterator *it = JsonbIteratorInit(obj);
	JsonbValue	v;
	JsonbIteratorToken tok;
	int			idx = -1;

	memset(sk->found, 0, sizeof(sk->found));
	sk->others = 0;
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			idx = column_key_index(v.val.string.val, v.val.string.len);
			if (idx >= nremovable)
				idx = -1;		/* "value" of a non-numeric resource stays in extra */
			if (idx < 0)
				sk->others++;
		}
		else if (tok == WJB_VALUE && idx >= 0)
		{
			sk->v[idx] = v;
			sk->found[idx] = true;
		}
	}
}

/* ->> of a key read by read_sample_keys: NULL when missing or JSON null. */
static char *
key_text(SampleKeys *sk, int idx)
{
	return sk->found[idx] ? jbv_cstring(&sk->v[idx]) : NULL;
}

/* A sample time: timestamptz, or the wall clock read as UTC for floating-time groups. */
static Timestamp
parse_time(const char *s, bool floating)
{
	if (floating)
		return DatumGetTimestamp(DirectFunctionCall3(timestamp_in, CStringGetDatum(s),
													 ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
	return DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(s),
												   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
}

/* The sample as text (left(sample::text, 200)), for the missing-timestamp error. */
static char *
sample_head(JsonbValue *sample)
{
	char	   *s = jbv_json_text(sample);
	int			len = pg_mbcharcliplen(s, strlen(s), 200);

	s[len] = '\0';
	return s;
}

/* What every sample of one group shares: the arguments and the keys that leave a sample's extra. */
typedef struct GroupInfo
{
	const char *resource;
	bool		numeric_kind;	/* value_kind = 'number': "value" is a column */
	bool		floating;		/* floating-time resource: the wall clock read as UTC */
	Jsonb	   *source_extra;	/* the group's source extras, or NULL */
	int			nremovable;		/* column_keys that have a column (8 numeric, else 7) */
	ArrayType  *removable;		/* those keys as text[], built on first need, in outer */
	MemoryContext outer;
} GroupInfo;

/* local_time: floating, the wall clock; else time at UTC + timezone_offset seconds (false: null). */
static bool
local_time(Timestamp t, bool floating, bool have_tz, int32 tz, Datum *out)
{
	Timestamp	lt;

	if (floating)
	{
		*out = TimestampGetDatum(t);
		return true;
	}
	if (!have_tz)
		return false;
	if (TIMESTAMP_NOT_FINITE(t))
	{
		*out = TimestampGetDatum(t);
		return true;
	}
	lt = t + (int64) tz * USECS_PER_SEC;
	if (!IS_VALID_TIMESTAMP(lt))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range")));
	*out = TimestampGetDatum(lt);
	return true;
}

/* extra: the keys without a column, plus the source extras, nulls stripped (false: null). */
static bool
sample_extra(GroupInfo *g, JsonbValue *elem, SampleKeys *sk, Datum *out)
{
	Datum		rest;
	Jsonb	   *stripped;

	if (sk->others == 0)
	{
		if (g->source_extra == NULL)
			return false;
		*out = JsonbPGetDatum(g->source_extra);
		return true;
	}
	if (g->removable == NULL)
	{
		Datum		keys[8];
		MemoryContext old = MemoryContextSwitchTo(g->outer);

		for (int k = 0; k < g->nremovable; k++)
			keys[k] = CStringGetTextDatum(column_keys[k]);
		g->removable = construct_array(keys, g->nremovable, TEXTOID, -1, false, TYPALIGN_INT);
		MemoryContextSwitchTo(old);
	}
	rest = DirectFunctionCall2(jsonb_delete_array, JsonbPGetDatum(JsonbValueToJsonb(elem)),
							   PointerGetDatum(g->removable));
	if (g->source_extra)
		rest = DirectFunctionCall2(jsonb_concat, rest, JsonbPGetDatum(g->source_extra));
	stripped = DatumGetJsonbP(DirectFunctionCall1(jsonb_strip_nulls, rest));
	if (JB_ROOT_IS_OBJECT(stripped) && JB_ROOT_COUNT(stripped) == 0)
		return false;
	*out = JsonbPGetDatum(stripped);
	return true;
}

/*
 * One sample (element ord of data[]) as a row: values/nulls of (ord, type, time, time_end, value,
 * unit, timezone_offset, local_time, extra), with the old SQL's error for each bad input.
 */
static void
sample_row(GroupInfo *g, JsonbValue *elem, int64 ord, Datum *values, bool *nulls)
{
	JsonbContainer *s;
	char	   *start_text;
	char	   *str;
	SampleKeys	sk;
	Timestamp	t;
	bool		have_tz = false;
	int32		tz = 0;

	/* sample - '{id,timestamp,...}': a scalar cannot have keys deleted */
	if (elem->type != jbvBinary)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot delete from scalar")));
	s = elem->val.binary.data;
	if (!JsonContainerIsObject(s))
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("%s sample without timestamp: %s", g->resource, sample_head(elem))));

	read_sample_keys(s, g->nremovable, &sk);
	start_text = key_text(&sk, K_START);
	if (start_text == NULL)
		start_text = key_text(&sk, K_TIMESTAMP);
	if (start_text == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NOT_NULL_VIOLATION),
				 errmsg("%s sample without timestamp: %s", g->resource, sample_head(elem))));

	values[0] = Int64GetDatum(ord);

	/* type */
	str = key_text(&sk, K_TYPE);
	values[1] = CStringGetTextDatum(str ? str : "");

	/* time, time_end */
	t = parse_time(start_text, g->floating);
	values[2] = TimestampTzGetDatum(t);
	str = key_text(&sk, K_END);
	if (str)
		values[3] = TimestampTzGetDatum(parse_time(str, g->floating));
	else
		nulls[3] = true;

	/* value */
	nulls[4] = true;
	if (g->numeric_kind && sk.found[K_VALUE] && sk.v[K_VALUE].type != jbvNull)
	{
		if (sk.v[K_VALUE].type != jbvNumeric)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
					 errmsg("%s sample value %s is not a number", g->resource,
							jbv_json_text(&sk.v[K_VALUE]))));
		values[4] = DirectFunctionCall1(numeric_float8, NumericGetDatum(sk.v[K_VALUE].val.numeric));
		nulls[4] = false;
	}

	/* unit */
	str = key_text(&sk, K_UNIT);
	if (str)
		values[5] = CStringGetTextDatum(str);
	else
		nulls[5] = true;

	/* timezone_offset */
	str = key_text(&sk, K_TZ);
	if (str)
	{
		tz = DatumGetInt32(DirectFunctionCall1(int4in, CStringGetDatum(str)));
		have_tz = true;
		values[6] = Int32GetDatum(tz);
	}
	else
		nulls[6] = true;

	nulls[7] = !local_time(t, g->floating, have_tz, tz, &values[7]);
	nulls[8] = !sample_extra(g, elem, &sk, &values[8]);
}

/*
 * junction._group_samples(grp jsonb, resource text, value_kind text, floating boolean,
 * source_extra jsonb) -> SETOF (ord, type, time, time_end, value, unit, timezone_offset,
 * local_time, extra): one typed row per element of grp -> 'data', in order.
 *
 * Why C: typing a sample in SQL took a dozen jsonb operators, each a lookup over the sample
 * object; this reads each sample's keys in one pass (read_sample_keys) and the group once, for
 * webhooks and junction_sync alike. It gives the same rows, and raises the same errors, as the SQL
 * it replaced (the rules are in the header of this file; sql/samples.sql guards them). Nothing
 * for a NULL group or resource, a non-object group or one without "data"; "data" must be an array.
 * Each sample's scratch memory is freed once its row is in the tuplestore.
 */
Datum
junction_group_samples(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Jsonb	   *grp;
	GroupInfo	g;
	JsonbValue	data;
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;
	int64		ord = 0;
	MemoryContext tmp;

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		PG_RETURN_NULL();
	grp = PG_GETARG_JSONB_P(0);
	g.resource = text_to_cstring(PG_GETARG_TEXT_PP(1));
	g.numeric_kind = !PG_ARGISNULL(2) && strcmp(text_to_cstring(PG_GETARG_TEXT_PP(2)), "number") == 0;
	g.floating = !PG_ARGISNULL(3) && PG_GETARG_BOOL(3);
	g.source_extra = PG_ARGISNULL(4) ? NULL : PG_GETARG_JSONB_P(4);
	g.nremovable = g.numeric_kind ? 8 : 7;
	g.removable = NULL;
	g.outer = CurrentMemoryContext;

	/* grp -> 'data': nothing for a non-object group or a missing key, as jsonb_array_elements(NULL) */
	if (!JB_ROOT_IS_OBJECT(grp) || !get_key(&grp->root, "data", &data))
		PG_RETURN_NULL();
	if (data.type != jbvBinary || !JsonContainerIsArray(data.val.binary.data) ||
		JsonContainerIsScalar(data.val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot extract elements from %s",
						(data.type == jbvBinary && JsonContainerIsObject(data.val.binary.data))
						? "an object" : "a scalar")));

	tmp = AllocSetContextCreate(g.outer, "junction group samples", ALLOCSET_DEFAULT_SIZES);
	it = JsonbIteratorInit(data.val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		Datum		values[NCOLS];
		bool		nulls[NCOLS] = {0};

		if (tok != WJB_ELEM)
			continue;
		CHECK_FOR_INTERRUPTS();
		ord++;
		MemoryContextSwitchTo(tmp);
		sample_row(&g, &elem, ord, values, nulls);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		MemoryContextSwitchTo(g.outer);
		MemoryContextReset(tmp);
	}
	MemoryContextDelete(tmp);
	PG_RETURN_NULL();
}

/*
 * junction._subxact_room() -> boolean: whether this backend can open one more subtransaction that
 * writes without overflowing its cache of subtransaction ids (PGPROC_MAX_CACHED_SUBXIDS). Past
 * that, every snapshot in the cluster has to consult pg_subtrans while this transaction lasts;
 * junction_sync only uses a subtransaction for its fast path while this returns true.
 */
Datum
junction_subxact_room(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(!MyProc->subxidStatus.overflowed &&
				   MyProc->subxidStatus.count < PGPROC_MAX_CACHED_SUBXIDS);
}
