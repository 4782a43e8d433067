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
 * Also here: junction._insert_new_samples(), the first-backfill loader: the same typing, then the
 * dedupe and a bulk insertion (table_multi_insert, as COPY inserts) of the rows into junction.samples;
 * junction._samples_bulk_ok(), which says whether that loader may run; and
 * junction._subxact_room(), which tells junction_sync whether its fast path may open one more
 * subtransaction.
 */
#include "postgres.h"

#include "access/table.h"
#include "access/tableam.h"
#include "catalog/namespace.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/jsonapi.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "utils/acl.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/uuid.h"
#include "utils/varlena.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/float.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"
#include "storage/proc.h"

#include "junction.h"

PG_FUNCTION_INFO_V1(junction_group_samples);
PG_FUNCTION_INFO_V1(junction_subxact_room);
PG_FUNCTION_INFO_V1(junction_insert_new_samples);
PG_FUNCTION_INFO_V1(junction_samples_bulk_ok);
PG_FUNCTION_INFO_V1(junction_page_from_text);

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
 * The typing rule of one sample, in two halves around its value, shared by the jsonb reader
 * (sample_row) and the page reader (span_sample): type, time and time_end from their texts
 * (start_text not null), then unit, timezone_offset and local_time. The errors come in this order.
 */
static Timestamp
row_times(GroupInfo *g, const char *start_text, const char *type, const char *end_text, int64 ord,
		  Datum *values, bool *nulls)
{
	Timestamp	t;

	values[0] = Int64GetDatum(ord);
	values[1] = CStringGetTextDatum(type ? type : "");
	t = parse_time(start_text, g->floating);
	values[2] = TimestampTzGetDatum(t);
	if (end_text)
		values[3] = TimestampTzGetDatum(parse_time(end_text, g->floating));
	else
		nulls[3] = true;
	return t;
}

static void
row_rest(GroupInfo *g, Timestamp t, const char *unit, const char *tz_text, Datum *values, bool *nulls)
{
	bool		have_tz = false;
	int32		tz = 0;

	if (unit)
		values[5] = CStringGetTextDatum(unit);
	else
		nulls[5] = true;
	if (tz_text)
	{
		tz = DatumGetInt32(DirectFunctionCall1(int4in, CStringGetDatum(tz_text)));
		have_tz = true;
		values[6] = Int32GetDatum(tz);
	}
	else
		nulls[6] = true;
	nulls[7] = !local_time(t, g->floating, have_tz, tz, &values[7]);
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
	SampleKeys	sk;
	Timestamp	t;

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

	t = row_times(g, start_text, key_text(&sk, K_TYPE), key_text(&sk, K_END), ord, values, nulls);

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

	row_rest(g, t, key_text(&sk, K_UNIT), key_text(&sk, K_TZ), values, nulls);
	nulls[8] = !sample_extra(g, elem, &sk, &values[8]);
}

/* grp -> 'data' must be an array: jsonb_array_elements' error otherwise. */
static void
require_array(JsonbValue *data)
{
	if (data->type != jbvBinary || !JsonContainerIsArray(data->val.binary.data) ||
		JsonContainerIsScalar(data->val.binary.data))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot extract elements from %s",
						(data->type == jbvBinary && JsonContainerIsObject(data->val.binary.data))
						? "an object" : "a scalar")));
}

static void resolve_data(JsonbValue *data);

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
	resolve_data(&data);		/* a page marker: its span, as jsonb */
	require_array(&data);

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

/* ---------------------------------------------------------------------------------------------
 * The first-backfill loader.
 *
 * junction._upsert_samples(items, conflicts => false) is called by junction_sync and the backfill
 * worker for a range that holds none of the user's samples of the resource (checked beforehand;
 * a unique_violation makes them load again with ON CONFLICT). There the SQL path spends most of its
 * time around the rows, not storing them: the typed rows go through a tuplestore, a sort for the
 * DISTINCT ON, the executor's INSERT, a RETURNING tuplestore and a GROUP BY for the hours. This
 * does the same in one pass: the groups' samples typed by sample_row() (the one typing rule), sorted
 * and deduped exactly as junction._sample_rows orders them, checked (NOT NULL, CHECK) and inserted
 * 1,000 at a time with table_multi_insert, then each row's index entries, with the unique check
 * (a duplicate key raises unique_violation, as the plain INSERT does). It returns one row per
 * (user, resource, UTC hour) written, with the number of rows, as the SQL path's RETURNING does.
 * ---------------------------------------------------------------------------------------------
 */
#define SAMPLES_NATTS 15
#define INSERT_BATCH 1000

/* junction.samples, column by column, as this loader writes it. */
static const char *const samples_cols[SAMPLES_NATTS] = {
	"user_id", "resource", "provider", "source_type", "type", "workout_id", "time", "time_end",
	"value", "unit", "timezone_offset", "local_time", "floating", "extra", "received_seq"
};
static const Oid samples_types[SAMPLES_NATTS] = {
	UUIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, UUIDOID, TIMESTAMPTZOID, TIMESTAMPTZOID,
	FLOAT8OID, TEXTOID, INT4OID, TIMESTAMPOID, BOOLOID, JSONBOID, INT8OID
};

/* One junction.sample_group: the fields its samples share (see junction._sample_groups). */
typedef struct NewGroup
{
	Datum		received_seq;
	Datum		user_id;
	Datum		resource;
	Datum		provider;
	Datum		source_type;
	Datum		workout_id;
	Datum		floating;
	bool		received_seq_null;
	bool		user_id_null;
	bool		resource_null;
	bool		provider_null;
	bool		source_type_null;
	bool		workout_id_null;
	bool		floating_null;
} NewGroup;

/* One typed sample: sample_row()'s columns (ord, type, time, time_end, value, unit, timezone_offset, local_time, extra). */
typedef struct NewRow
{
	NewGroup   *g;
	Datum		v[NCOLS];
	bool		n[NCOLS];
} NewRow;

/* junction.samples, if this loader may write it: a plain table, no trigger, rule or row security,
 * no generated column, the columns above, and no Citus (its tables take writes through its planner). */
static Oid
samples_relid(void)
{
	Oid			nsp = get_namespace_oid("junction", true);

	return OidIsValid(nsp) ? get_relname_relid("samples", nsp) : InvalidOid;
}

static const char *
bulk_refusal(Relation rel)
{
	TupleDesc	desc = RelationGetDescr(rel);

	if (rel->rd_rel->relkind != RELKIND_RELATION || rel->rd_rel->relispartition)
		return "it is not a plain table";
	if (rel->trigdesc != NULL)
		return "it has triggers";
	if (rel->rd_rules != NULL)
		return "it has rules";
	if (rel->rd_rel->relrowsecurity)
		return "it has row security";
	if (desc->constr && desc->constr->has_generated_stored)
		return "it has generated columns";
	if (desc->natts != SAMPLES_NATTS)
		return "its columns have changed";
	for (int i = 0; i < SAMPLES_NATTS; i++)
	{
		Form_pg_attribute a = TupleDescAttr(desc, i);

		if (a->attisdropped || a->atttypid != samples_types[i] ||
			strcmp(NameStr(a->attname), samples_cols[i]) != 0)
			return "its columns have changed";
	}
	if (OidIsValid(get_extension_oid("citus", true)))
		return "Citus is installed";
	return NULL;
}

/*
 * junction._samples_bulk_ok() -> boolean: whether junction._insert_new_samples may load
 * junction.samples here (else junction._upsert_samples takes the SQL path, which honours
 * triggers, rules, row security and Citus).
 */
Datum
junction_samples_bulk_ok(PG_FUNCTION_ARGS)
{
	Oid			relid = samples_relid();
	Relation	rel;
	bool		ok;

	if (!OidIsValid(relid))
		PG_RETURN_BOOL(false);
	rel = table_open(relid, AccessShareLock);
	ok = bulk_refusal(rel) == NULL;
	table_close(rel, AccessShareLock);
	PG_RETURN_BOOL(ok);
}

/* Compare two texts as ORDER BY does (the database's default collation); equal bytes are equal. */
static int
text_order(Datum a, bool anull, Datum b, bool bnull)
{
	text	   *ta,
			   *tb;
	int			la,
				lb;

	if (anull || bnull)
		return anull == bnull ? 0 : (anull ? 1 : -1);	/* NULLS LAST */
	ta = (text *) DatumGetPointer(a);
	tb = (text *) DatumGetPointer(b);
	la = VARSIZE_ANY_EXHDR(ta);
	lb = VARSIZE_ANY_EXHDR(tb);
	if (la == lb && memcmp(VARDATA_ANY(ta), VARDATA_ANY(tb), la) == 0)
		return 0;
	return varstr_cmp(VARDATA_ANY(ta), la, VARDATA_ANY(tb), lb, DEFAULT_COLLATION_OID);
}

static int
uuid_order(Datum a, bool anull, Datum b, bool bnull)
{
	if (anull || bnull)
		return anull == bnull ? 0 : (anull ? 1 : -1);
	return memcmp(DatumGetUUIDP(a)->data, DatumGetUUIDP(b)->data, UUID_LEN);
}

/* The sample key in junction._sample_rows' order: (user_id, time, resource, provider, source_type, type, workout_id). */
static int
key_order(const NewRow *a, const NewRow *b)
{
	int			c;
	TimestampTz ta = DatumGetTimestampTz(a->v[2]),
				tb = DatumGetTimestampTz(b->v[2]);

	if ((c = uuid_order(a->g->user_id, a->g->user_id_null, b->g->user_id, b->g->user_id_null)) != 0)
		return c;
	if (ta != tb)
		return ta < tb ? -1 : 1;
	if (a->g != b->g)
	{
		if ((c = text_order(a->g->resource, a->g->resource_null, b->g->resource, b->g->resource_null)) != 0 ||
			(c = text_order(a->g->provider, a->g->provider_null, b->g->provider, b->g->provider_null)) != 0 ||
			(c = text_order(a->g->source_type, a->g->source_type_null, b->g->source_type, b->g->source_type_null)) != 0)
			return c;
	}
	if ((c = text_order(a->v[1], false, b->v[1], false)) != 0)
		return c;
	if (a->g != b->g)
		return uuid_order(a->g->workout_id, a->g->workout_id_null, b->g->workout_id, b->g->workout_id_null);
	return 0;
}

/* The full order: the key, then the latest received first (received_seq DESC, ord DESC). */
static int
row_order(const void *pa, const void *pb, void *arg)
{
	const NewRow *a = *(NewRow *const *) pa;
	const NewRow *b = *(NewRow *const *) pb;
	int			c = key_order(a, b);
	int64		ra,
				rb,
				oa,
				ob;

	if (c != 0)
		return c;
	if (a->g->received_seq_null != b->g->received_seq_null)
		return a->g->received_seq_null ? -1 : 1;	/* DESC puts nulls first */
	ra = DatumGetInt64(a->g->received_seq);
	rb = DatumGetInt64(b->g->received_seq);
	if (!a->g->received_seq_null && ra != rb)
		return ra > rb ? -1 : 1;
	oa = DatumGetInt64(a->v[0]);
	ob = DatumGetInt64(b->v[0]);
	if (oa != ob)
		return oa > ob ? -1 : 1;
	return 0;
}

/* An hour written: (user, resource) of a group, the UTC hour, and how many rows. */
typedef struct NewHour
{
	NewGroup   *g;
	TimestampTz hour;
	int64		n;
} NewHour;

static int
hour_order(const void *pa, const void *pb, void *arg)
{
	const NewHour *a = (const NewHour *) pa;
	const NewHour *b = (const NewHour *) pb;
	int			c;

	if (a->g != b->g)
	{
		if ((c = uuid_order(a->g->user_id, a->g->user_id_null, b->g->user_id, b->g->user_id_null)) != 0 ||
			(c = text_order(a->g->resource, a->g->resource_null, b->g->resource, b->g->resource_null)) != 0)
			return c;
	}
	if (a->hour != b->hour)
		return a->hour < b->hour ? -1 : 1;
	return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Pages read straight into rows.
 *
 * A first backfill spends more time turning each page into jsonb (jsonb_in builds and sorts every
 * sample object) than storing its rows. junction._api_page returns the page as jsonb with each
 * group's "data" array left out: in its place a marker {"$junction_span": "<nonce>:<start>:<end>"}
 * that points into the page's text, kept here until the next page. Whoever reads a group's samples
 * resolves the marker: the bulk loader reads the samples from the text with Postgres' JSON parser
 * (common/jsonapi.h, semantic actions), without building jsonb; everything else (the SQL path)
 * parses the span into jsonb and goes on as before. The nonce is random per page, so no body can
 * forge a marker. The page reader types a sample with the same halves of the typing rule as
 * sample_row; a sample it cannot read that way exactly (a key that goes to extra, a nested value,
 * a value that is not a plain number, no timestamp: whatever needs jsonb to render or to convert)
 * makes it give up on the group, whose span is then typed through jsonb as before.
 * ---------------------------------------------------------------------------------------------
 */
#define SPAN_KEY "$junction_span"

static char *page_text = NULL;	/* the last page read by junction._api_page, in TopMemoryContext */
static int	page_len = 0;
static int	page_cap = 0;
static uint64 page_nonce = 0;

/* The span a marker points to, if data is one for the page in store. */
static bool
span_of(JsonbValue *data, int *start, int *end)
{
	JsonbValue	v;
	char		buf[64];
	unsigned long long nonce;
	int			a,
				b;
	char		tail;

	if (page_text == NULL || data->type != jbvBinary || !JsonContainerIsObject(data->val.binary.data))
		return false;
	if (!get_key(data->val.binary.data, SPAN_KEY, &v) || v.type != jbvString ||
		v.val.string.len >= (int) sizeof(buf))
		return false;
	memcpy(buf, v.val.string.val, v.val.string.len);
	buf[v.val.string.len] = '\0';
	if (sscanf(buf, "%llx:%d:%d%c", &nonce, &a, &b, &tail) != 3 || (uint64) nonce != page_nonce ||
		a < 0 || b <= a || b > page_len)
		return false;
	*start = a;
	*end = b;
	return true;
}

/* A span of the page as jsonb (what the full page's jsonb held there). */
static Jsonb *
span_jsonb(int start, int end)
{
	return DatumGetJsonbP(DirectFunctionCall1(jsonb_in,
											  CStringGetDatum(pnstrdup(page_text + start, end - start))));
}

/* data, or for a marker the array it stands for (as jsonb). */
static void
resolve_data(JsonbValue *data)
{
	int			a,
				b;

	if (span_of(data, &a, &b))
	{
		Jsonb	   *arr = span_jsonb(a, b);

		data->type = jbvBinary;
		data->val.binary.data = &arr->root;
		data->val.binary.len = VARSIZE(arr) - VARHDRSZ;
	}
}

/* ---- the page skeleton: where each group's data array is ---- */
#define SKEL_DEPTH 8

typedef struct SkelState
{
	JsonLexContext *lex;
	int			depth;
	char		kind[SKEL_DEPTH];	/* 'o' or 'a' at each depth */
	int			groups_at;		/* depth of the "groups" object while inside it, else 0 */
	bool		next_groups;	/* the value being parsed is the page's "groups" */
	bool		next_data;		/* the value being parsed is a group's "data" */
	bool		in_data;
	int			data_start;
	int		   *spans;			/* start, end pairs */
	int			nspans;
	int			cap;
} SkelState;

static void
skel_push(SkelState *s, char kind)
{
	s->depth++;
	if (s->depth < SKEL_DEPTH)
		s->kind[s->depth] = kind;
}

static void
skel_ostart(void *st)
{
	SkelState  *s = st;

	skel_push(s, 'o');
	if (s->depth == 2 && s->next_groups && s->kind[1] == 'o')
		s->groups_at = 2;
	s->next_groups = s->next_data = false;
}

static void
skel_oend(void *st)
{
	SkelState  *s = st;

	if (s->depth == s->groups_at)
		s->groups_at = 0;
	s->depth--;
}

static void
skel_astart(void *st)
{
	SkelState  *s = st;

	skel_push(s, 'a');
	if (s->depth == 5 && s->next_data)
	{
		s->in_data = true;
		s->data_start = s->lex->token_start - s->lex->input;
	}
	s->next_groups = s->next_data = false;
}

static void
skel_aend(void *st)
{
	SkelState  *s = st;

	if (s->in_data && s->depth == 5)
	{
		if (s->nspans + 2 > s->cap)
		{
			s->cap = s->cap ? s->cap * 2 : 64;
			s->spans = s->spans ? repalloc(s->spans, sizeof(int) * s->cap) : palloc(sizeof(int) * s->cap);
		}
		s->spans[s->nspans++] = s->data_start;
		s->spans[s->nspans++] = s->lex->prev_token_terminator - s->lex->input;
		s->in_data = false;
	}
	s->depth--;
}

static void
skel_fstart(void *st, char *fname, bool isnull)
{
	SkelState  *s = st;

	if (s->depth == 1)
		s->next_groups = fname && strcmp(fname, "groups") == 0;
	else if (s->depth == 4 && s->groups_at == 2 && s->kind[3] == 'a' && s->kind[4] == 'o')
		s->next_data = fname && strcmp(fname, "data") == 0;
}

static void
skel_fend(void *st, char *fname, bool isnull)
{
	SkelState  *s = st;

	s->next_groups = s->next_data = false;
}

/*
 * The skeleton of a timeseries page ({"groups": {provider: [{..., "data": [...]}, ...]}, ...}):
 * its jsonb with every group's data array replaced by a marker, the text kept for the markers.
 * NULL when the body has no such array, or is not valid JSON (the caller then parses it whole,
 * and reports what is wrong with it).
 */
Jsonb *
junction_page_skeleton(StringInfo body)
{
	MemoryContext tmp,
				old;
	SkelState	s = {0};
	JsonSemAction sem = {0};
	JsonParseErrorType err;
	StringInfoData skel;
	Jsonb	   *res;
	int			pos = 0;

	if (body->len == 0 || memchr(body->data, '\0', body->len) != NULL)
		return NULL;
	tmp = AllocSetContextCreate(CurrentMemoryContext, "junction page skeleton", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(tmp);
	s.lex = makeJsonLexContextCstringLen(body->data, body->len, GetDatabaseEncoding(), true);
	sem.semstate = &s;
	sem.object_start = skel_ostart;
	sem.object_end = skel_oend;
	sem.array_start = skel_astart;
	sem.array_end = skel_aend;
	sem.object_field_start = skel_fstart;
	sem.object_field_end = skel_fend;
	err = pg_parse_json(s.lex, &sem);
	MemoryContextSwitchTo(old);
	if (err != JSON_SUCCESS || s.nspans == 0)
	{
		MemoryContextDelete(tmp);
		return NULL;
	}

	/* keep the text, under a new nonce */
	if (page_cap < body->len + 1)
	{
		if (page_text)
			pfree(page_text);
		page_cap = Max(body->len + 1, 1024 * 1024);
		page_text = MemoryContextAlloc(TopMemoryContext, page_cap);
	}
	memcpy(page_text, body->data, body->len + 1);
	page_len = body->len;
	if (!pg_strong_random(&page_nonce, sizeof(page_nonce)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random number")));

	initStringInfo(&skel);
	for (int i = 0; i < s.nspans; i += 2)
	{
		appendBinaryStringInfo(&skel, body->data + pos, s.spans[i] - pos);
		appendStringInfo(&skel, "{\"" SPAN_KEY "\":\"%016llx:%d:%d\"}",
						 (unsigned long long) page_nonce, s.spans[i], s.spans[i + 1]);
		pos = s.spans[i + 1];
	}
	appendBinaryStringInfo(&skel, body->data + pos, body->len - pos);
	MemoryContextDelete(tmp);
	res = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(skel.data)));
	pfree(skel.data);
	return res;
}

/* ---- the samples of a span, read straight into rows ---- */
typedef struct SpanState
{
	GroupInfo  *g;
	NewGroup   *ng;
	int			depth;			/* 1 inside the data array, 2 inside a sample */
	int			key;			/* the column key of the field being read (-1: none) */
	bool		gave_up;
	int64		ord;
	char	   *tok[8];
	JsonTokenType ttype[8];
	/* the rows */
	NewRow	  **rows;
	int		   *nrows;
	int		   *cap;
	MemoryContext keep;
} SpanState;

static void
span_ostart(void *st)
{
	SpanState  *s = st;

	s->depth++;
	if (s->depth == 2)
	{
		memset(s->tok, 0, sizeof(s->tok));
		s->ord++;
	}
	else if (s->depth > 2 && s->key != K_ID)
		s->gave_up = true;		/* a nested value */
}

static void
span_astart(void *st)
{
	SpanState  *s = st;

	s->depth++;
	if (s->depth == 2 || (s->depth > 2 && s->key != K_ID))
		s->gave_up = true;		/* an array sample, or a nested value */
}

static void
span_aend(void *st)
{
	((SpanState *) st)->depth--;
}

static void
span_fstart(void *st, char *fname, bool isnull)
{
	SpanState  *s = st;

	if (s->depth != 2)
		return;
	s->key = column_key_index(fname, strlen(fname));
	if (s->key >= s->g->nremovable)
		s->key = -1;
	if (s->key < 0)
		s->gave_up = true;		/* a key that goes to extra */
}

static void
span_scalar(void *st, char *token, JsonTokenType type)
{
	SpanState  *s = st;

	if (s->depth == 1)
		s->gave_up = true;		/* a scalar sample */
	else if (s->depth == 2 && s->key >= 0 && s->key != K_ID)
	{
		s->tok[s->key] = token;	/* a repeated key: the last wins, as in jsonb */
		s->ttype[s->key] = type;
	}
}

/* -?digits, and not -0: a number whose ->> text is its JSON text */
static bool
plain_integer(const char *t)
{
	const char *p = t + (*t == '-');

	if (*p == '\0' || strcmp(t, "-0") == 0)
		return false;
	for (; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	return true;
}

/* A field as ->> reads it into *out (NULL for null or missing); false when only jsonb can say. */
static bool
span_text(SpanState *s, int k, char **out)
{
	*out = NULL;
	if (s->tok[k] == NULL || s->ttype[k] == JSON_TOKEN_NULL)
		return true;
	switch (s->ttype[k])
	{
		case JSON_TOKEN_STRING:
			*out = s->tok[k];
			return true;
		case JSON_TOKEN_TRUE:
		case JSON_TOKEN_FALSE:
			*out = s->tok[k];	/* "true" / "false" */
			return true;
		case JSON_TOKEN_NUMBER:
			*out = s->tok[k];
			return plain_integer(s->tok[k]);
		default:
			return false;
	}
}

/* A timestamp field: only a string (or null) reads without jsonb. */
static bool
span_time(SpanState *s, int k, char **out)
{
	*out = NULL;
	if (s->tok[k] == NULL || s->ttype[k] == JSON_TOKEN_NULL)
		return true;
	if (s->ttype[k] != JSON_TOKEN_STRING)
		return false;
	*out = s->tok[k];
	return true;
}

/* -?digits(.digits)?: numeric_float8(numeric) of it is float8in of its text (zero: +0). */
static bool
plain_decimal(const char *t)
{
	const char *p = t + (*t == '-');
	bool		digits = false;

	for (; *p >= '0' && *p <= '9'; p++)
		digits = true;
	if (*p == '.')
	{
		digits = false;
		for (p++; *p >= '0' && *p <= '9'; p++)
			digits = true;
	}
	return digits && *p == '\0';
}

static void
span_oend(void *st)
{
	SpanState  *s = st;
	char	   *start,
			   *stamp,
			   *end,
			   *type,
			   *unit,
			   *tz;
	NewRow	   *r;
	Timestamp	t;

	if (s->depth-- != 2 || s->gave_up)
		return;
	if (!span_time(s, K_START, &start) || !span_time(s, K_TIMESTAMP, &stamp) ||
		!span_time(s, K_END, &end) || !span_text(s, K_TYPE, &type) ||
		!span_text(s, K_UNIT, &unit) || !span_text(s, K_TZ, &tz) ||
		(start == NULL && stamp == NULL) ||
		(s->tok[K_VALUE] && s->ttype[K_VALUE] != JSON_TOKEN_NULL && s->ttype[K_VALUE] != JSON_TOKEN_NUMBER))
	{
		s->gave_up = true;
		return;
	}
	if (*s->nrows == *s->cap)
	{
		*s->cap *= 2;
		*s->rows = repalloc_huge(*s->rows, sizeof(NewRow) * (Size) *s->cap);
	}
	r = &(*s->rows)[(*s->nrows)++];
	memset(r->n, 0, sizeof(r->n));
	r->g = s->ng;

	t = row_times(s->g, start ? start : stamp, type, end, s->ord, r->v, r->n);
	r->n[4] = true;
	if (s->tok[K_VALUE] && s->ttype[K_VALUE] == JSON_TOKEN_NUMBER)
	{
		const char *v = s->tok[K_VALUE];

		if (plain_decimal(v))
		{
			float8		d = DatumGetFloat8(DirectFunctionCall1(float8in, CStringGetDatum(v)));

			r->v[4] = Float8GetDatum(d == 0 ? 0.0 : d);
		}
		else
			r->v[4] = DirectFunctionCall1(numeric_float8,
										  DirectFunctionCall3(numeric_in, CStringGetDatum(v),
															  ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1)));
		r->n[4] = false;
	}
	row_rest(s->g, t, unit, tz, r->v, r->n);
	/* extra: no key of its own here, so the group's source extras */
	r->n[8] = s->g->source_extra == NULL;
	if (!r->n[8])
		r->v[8] = JsonbPGetDatum(s->g->source_extra);
	/* keep type and unit past the span's scratch */
	{
		MemoryContext o = MemoryContextSwitchTo(s->keep);

		r->v[1] = datumCopy(r->v[1], false, -1);
		if (!r->n[5])
			r->v[5] = datumCopy(r->v[5], false, -1);
		MemoryContextSwitchTo(o);
	}
}

/*
 * The samples of page_text[start, end) appended to rows; false (rows as they were) when the
 * reader gave up on one of them and the span has to be typed through jsonb.
 */
static bool
span_rows(GroupInfo *g, NewGroup *ng, int start, int end, NewRow **rows, int *nrows, int *cap,
		  MemoryContext keep)
{
	SpanState	s = {0};
	JsonSemAction sem = {0};
	JsonLexContext *lex;
	JsonParseErrorType err;
	MemoryContext tmp = AllocSetContextCreate(keep, "junction page span", ALLOCSET_DEFAULT_SIZES);
	int			before = *nrows;

	s.g = g;
	s.ng = ng;
	s.key = -1;
	s.rows = rows;
	s.nrows = nrows;
	s.cap = cap;
	s.keep = keep;
	sem.semstate = &s;
	sem.object_start = span_ostart;
	sem.object_end = span_oend;
	sem.array_start = span_astart;
	sem.array_end = span_aend;
	sem.object_field_start = span_fstart;
	sem.scalar = span_scalar;
	MemoryContextSwitchTo(tmp);
	lex = makeJsonLexContextCstringLen(page_text + start, end - start, GetDatabaseEncoding(), true);
	err = pg_parse_json(lex, &sem);
	MemoryContextSwitchTo(keep);
	MemoryContextDelete(tmp);
	if (err != JSON_SUCCESS || s.gave_up)
	{
		*nrows = before;
		return false;
	}
	return true;
}

/* The fields of one junction.sample_group value. */
static void
read_group(HeapTupleHeader th, NewGroup *g, Datum *obj, bool *obj_null, Datum *value_kind,
		   bool *value_kind_null, Datum *source_extra, bool *source_extra_null)
{
	g->received_seq = GetAttributeByNum(th, 1, &g->received_seq_null);
	g->user_id = GetAttributeByNum(th, 2, &g->user_id_null);
	g->resource = GetAttributeByNum(th, 3, &g->resource_null);
	*obj = GetAttributeByNum(th, 4, obj_null);
	*value_kind = GetAttributeByNum(th, 5, value_kind_null);
	g->provider = GetAttributeByNum(th, 6, &g->provider_null);
	g->source_type = GetAttributeByNum(th, 7, &g->source_type_null);
	g->workout_id = GetAttributeByNum(th, 8, &g->workout_id_null);
	*source_extra = GetAttributeByNum(th, 9, source_extra_null);
	g->floating = GetAttributeByNum(th, 10, &g->floating_null);
	/* detoasted once here, not per sample */
	if (!g->resource_null)
		g->resource = PointerGetDatum(PG_DETOAST_DATUM_PACKED(g->resource));
	if (!g->provider_null)
		g->provider = PointerGetDatum(PG_DETOAST_DATUM_PACKED(g->provider));
	if (!g->source_type_null)
		g->source_type = PointerGetDatum(PG_DETOAST_DATUM_PACKED(g->source_type));
}

/* Append the typed samples of one group to rows (as junction._group_samples types them). */
static void
type_group(NewGroup *ng, Jsonb *grp, const char *resource, bool numeric_kind, bool floating,
		   Jsonb *source_extra, NewRow **rows, int *nrows, int *cap, MemoryContext keep)
{
	GroupInfo	g;
	JsonbValue	data;
	JsonbIterator *it;
	JsonbValue	elem;
	JsonbIteratorToken tok;
	int64		ord = 0;
	MemoryContext tmp;

	g.resource = resource;
	g.numeric_kind = numeric_kind;
	g.floating = floating;
	g.source_extra = source_extra;
	g.nremovable = numeric_kind ? 8 : 7;
	g.removable = NULL;
	g.outer = keep;

	if (!JB_ROOT_IS_OBJECT(grp) || !get_key(&grp->root, "data", &data))
		return;
	{
		int			a,
					b;

		/* a page marker: its samples read from the page's text, else through jsonb */
		if (span_of(&data, &a, &b))
		{
			if (span_rows(&g, ng, a, b, rows, nrows, cap, keep))
				return;
			resolve_data(&data);
		}
	}
	require_array(&data);

	tmp = AllocSetContextCreate(keep, "junction new samples", ALLOCSET_DEFAULT_SIZES);
	it = JsonbIteratorInit(data.val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &elem, true)) != WJB_DONE)
	{
		NewRow	   *r;

		if (tok != WJB_ELEM)
			continue;
		CHECK_FOR_INTERRUPTS();
		ord++;
		if (*nrows == *cap)
		{
			*cap *= 2;
			*rows = repalloc_huge(*rows, sizeof(NewRow) * (Size) *cap);
		}
		r = &(*rows)[(*nrows)++];
		memset(r->n, 0, sizeof(r->n));
		r->g = ng;
		MemoryContextSwitchTo(tmp);
		sample_row(&g, &elem, ord, r->v, r->n);
		MemoryContextSwitchTo(keep);
		/* keep the by-reference columns (type, unit, extra), free the scratch */
		for (int k = 1; k < NCOLS; k++)
			if (!r->n[k] && (k == 1 || k == 5 || k == 8))
				r->v[k] = datumCopy(r->v[k], false, -1);
		MemoryContextReset(tmp);
	}
	MemoryContextDelete(tmp);
}

/* One kept row into a slot, in junction.samples' column order. */
static void
fill_slot(TupleTableSlot *slot, NewRow *r)
{
	Datum	   *v = slot->tts_values;
	bool	   *n = slot->tts_isnull;
	NewGroup   *g = r->g;

	ExecClearTuple(slot);
	v[0] = g->user_id;			n[0] = g->user_id_null;
	v[1] = g->resource;			n[1] = g->resource_null;
	v[2] = g->provider;			n[2] = g->provider_null;
	v[3] = g->source_type;		n[3] = g->source_type_null;
	v[4] = r->v[1];				n[4] = r->n[1];		/* type */
	v[5] = g->workout_id;		n[5] = g->workout_id_null;
	v[6] = r->v[2];				n[6] = r->n[2];		/* time */
	v[7] = r->v[3];				n[7] = r->n[3];		/* time_end */
	v[8] = r->v[4];				n[8] = r->n[4];		/* value */
	v[9] = r->v[5];				n[9] = r->n[5];		/* unit */
	v[10] = r->v[6];			n[10] = r->n[6];	/* timezone_offset */
	v[11] = r->v[7];			n[11] = r->n[7];	/* local_time */
	v[12] = g->floating;		n[12] = g->floating_null;
	v[13] = r->v[8];			n[13] = r->n[8];	/* extra */
	v[14] = g->received_seq;	n[14] = g->received_seq_null;
	ExecStoreVirtualTuple(slot);
}

/* Store rows[0..n) in rel: checked, bulk-inserted, indexed (a duplicate key raises unique_violation). */
static void
bulk_insert(Relation rel, NewRow **rows, int n)
{
	EState	   *estate = CreateExecutorState();
	RangeTblEntry *rte = makeNode(RangeTblEntry);
	ResultRelInfo *rri = makeNode(ResultRelInfo);
	CommandId	cid = GetCurrentCommandId(true);
	TupleTableSlot *slots[INSERT_BATCH];
	int			nslots = Min(n, INSERT_BATCH);
	bool		check = RelationGetDescr(rel)->constr != NULL;

	rte->rtekind = RTE_RELATION;
	rte->relid = RelationGetRelid(rel);
	rte->relkind = rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	rte->requiredPerms = ACL_INSERT;
	ExecInitRangeTable(estate, list_make1(rte));
	ExecInitResultRelation(estate, rri, 1);
	CheckValidResultRel(rri, CMD_INSERT);
	ExecOpenIndices(rri, false);
	for (int i = 0; i < nslots; i++)
		slots[i] = table_slot_create(rel, NULL);

	for (int done = 0; done < n;)
	{
		int			k = Min(n - done, INSERT_BATCH);

		CHECK_FOR_INTERRUPTS();
		for (int i = 0; i < k; i++)
		{
			fill_slot(slots[i], rows[done + i]);
			if (check)
				ExecConstraints(rri, slots[i], estate);
			ResetPerTupleExprContext(estate);
		}
		table_multi_insert(rel, slots, k, cid, 0, NULL);
		for (int i = 0; i < k; i++)
		{
			if (rri->ri_NumIndices > 0)
				list_free(ExecInsertIndexTuples(rri, slots[i], estate, false, false, NULL, NIL));
			ResetPerTupleExprContext(estate);
			ExecClearTuple(slots[i]);
		}
		done += k;
	}
	for (int i = 0; i < nslots; i++)
		ExecDropSingleTupleTableSlot(slots[i]);
	ExecCloseResultRelations(estate);
	ExecCloseRangeTableRelations(estate);
	FreeExecutorState(estate);
}

/*
 * junction._insert_new_samples(groups junction.sample_group[]) -> SETOF (user_id uuid,
 * resource text, hour timestamptz, n bigint): the groups' samples, typed, deduped on the key
 * (the latest received wins) and inserted into junction.samples, which must not hold any of
 * their keys (the caller's fast path); one row per (user, resource, UTC hour) written.
 * Runs with TimeZone = UTC (set by junction._upsert_samples).
 */
Datum
junction_insert_new_samples(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *enulls;
	int			ngroups;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	NewGroup   *groups;
	NewRow	   *rows;
	NewRow	  **sorted;
	NewHour    *hours;
	int			nrows = 0,
				cap = 1024,
				nkept = 0,
				nhours = 0;
	Oid			relid;
	Relation	rel;
	const char *refusal;
	AclResult	acl;
	MemoryContext work,
				old;

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();

	relid = samples_relid();
	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation \"junction.samples\" does not exist")));
	rel = table_open(relid, RowExclusiveLock);
	acl = pg_class_aclcheck(relid, GetUserId(), ACL_INSERT);
	if (acl != ACLCHECK_OK)
		aclcheck_error(acl, OBJECT_TABLE, RelationGetRelationName(rel));
	if ((refusal = bulk_refusal(rel)) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot bulk-load junction.samples: %s", refusal),
				 errhint("junction._upsert_samples checks junction._samples_bulk_ok() and takes the SQL path instead.")));

	work = AllocSetContextCreate(CurrentMemoryContext, "junction insert new samples", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(work);

	arr = PG_GETARG_ARRAYTYPE_P(0);
	get_typlenbyvalalign(ARR_ELEMTYPE(arr), &typlen, &typbyval, &typalign);
	deconstruct_array(arr, ARR_ELEMTYPE(arr), typlen, typbyval, typalign, &elems, &enulls, &ngroups);
	groups = palloc0(sizeof(NewGroup) * Max(ngroups, 1));
	rows = palloc_extended(sizeof(NewRow) * cap, 0);

	/* 1. type every group's samples (junction._sample_rows: nothing for a null group, resource or object) */
	for (int i = 0; i < ngroups; i++)
	{
		Datum		obj,
					kind,
					extra;
		bool		obj_null,
					kind_null,
					extra_null;
		char	   *kind_s;

		if (enulls[i])
			continue;
		read_group(DatumGetHeapTupleHeader(elems[i]), &groups[i], &obj, &obj_null, &kind, &kind_null,
				   &extra, &extra_null);
		if (groups[i].resource_null || obj_null)
			continue;
		kind_s = kind_null ? NULL : TextDatumGetCString(kind);
		type_group(&groups[i], DatumGetJsonbP(obj), TextDatumGetCString(groups[i].resource),
				   kind_s != NULL && strcmp(kind_s, "number") == 0,
				   !groups[i].floating_null && DatumGetBool(groups[i].floating),
				   extra_null ? NULL : DatumGetJsonbP(extra), &rows, &nrows, &cap, work);
	}

	/* 2. the key order of junction._sample_rows; the first of each key is the one kept (DISTINCT ON) */
	sorted = palloc(sizeof(NewRow *) * Max(nrows, 1));
	for (int i = 0; i < nrows; i++)
		sorted[i] = &rows[i];
	qsort_arg(sorted, nrows, sizeof(NewRow *), row_order, NULL);
	for (int i = 0; i < nrows; i++)
		if (nkept == 0 || key_order(sorted[nkept - 1], sorted[i]) != 0)
			sorted[nkept++] = sorted[i];

	/* 3. store them */
	if (nkept > 0)
		bulk_insert(rel, sorted, nkept);

	/* 4. the hours written, as date_trunc('hour', time) in UTC */
	hours = palloc(sizeof(NewHour) * Max(nkept, 1));
	for (int i = 0, h = -1; i < nkept; i++)
	{
		TimestampTz t = DatumGetTimestampTz(sorted[i]->v[2]);
		TimestampTz hr;

		if (h >= 0 && !TIMESTAMP_NOT_FINITE(hours[h].hour) && hours[h].g == sorted[i]->g &&
			t >= hours[h].hour && t - hours[h].hour < USECS_PER_HOUR)
			hr = hours[h].hour;
		else
			hr = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_trunc, CStringGetTextDatum("hour"),
														 TimestampTzGetDatum(t)));
		if (h >= 0 && hours[h].g == sorted[i]->g && hours[h].hour == hr)
			hours[h].n++;
		else
		{
			h = nhours++;
			hours[h].g = sorted[i]->g;
			hours[h].hour = hr;
			hours[h].n = 1;
		}
	}
	qsort_arg(hours, nhours, sizeof(NewHour), hour_order, NULL);

	MemoryContextSwitchTo(old);
	for (int i = 0; i < nhours;)
	{
		Datum		values[4];
		bool		nulls[4] = {0};
		int64		n = 0;
		int			j = i;

		while (j < nhours && hour_order(&hours[i], &hours[j], NULL) == 0)
			n += hours[j++].n;
		values[0] = hours[i].g->user_id;
		nulls[0] = hours[i].g->user_id_null;
		values[1] = hours[i].g->resource;
		values[2] = TimestampTzGetDatum(hours[i].hour);
		values[3] = Int64GetDatum(n);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		i = j;
	}
	MemoryContextDelete(work);
	table_close(rel, NoLock);
	PG_RETURN_NULL();
}

/*
 * junction._page_from_text(body text) -> jsonb: what junction._api_page returns for a response
 * with this body (the page with its groups' data arrays left in the text); for tests and for
 * loading a page saved from the API.
 */
Datum
junction_page_from_text(PG_FUNCTION_ARGS)
{
	StringInfoData body;
	Jsonb	   *res;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	initStringInfo(&body);
	appendStringInfoString(&body, text_to_cstring(PG_GETARG_TEXT_PP(0)));
	res = junction_page_skeleton(&body);
	if (res == NULL)
		res = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(body.data)));
	PG_RETURN_JSONB_P(res);
}
