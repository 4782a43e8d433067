/*
 * http.c — the Junction API client (libcurl): one reused handle per backend,
 * a fixed base URL from the GUCs, TLS verification always on, no redirects,
 * connect and total timeouts, query cancel / statement_timeout through the
 * progress callback, retries with Retry-After or exponential backoff, and SQL
 * errors that carry a SQLSTATE, the status, method, path and Junction's
 * detail text — never the key.  It owns the API settings (junction.api_key*,
 * *_base_url, http_*, auto_backfill), the key files, the redaction of answers,
 * and raise_http_error, the one place an HTTP status becomes a SQLSTATE.
 */
#include "postgres.h"

#include <sys/stat.h>
#include <curl/curl.h>

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "common/jsonapi.h"
#include "common/pg_prng.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "backoff.h"
#include "junction.h"

PG_FUNCTION_INFO_V1(junction_api);
PG_FUNCTION_INFO_V1(junction_api_request);
PG_FUNCTION_INFO_V1(junction_api_page);
PG_FUNCTION_INFO_V1(junction_api_base_url_of);
PG_FUNCTION_INFO_V1(junction_api_prefetch);
PG_FUNCTION_INFO_V1(junction_redact_sql);
PG_FUNCTION_INFO_V1(junction_api_pause);
PG_FUNCTION_INFO_V1(junction_raise_http_error_sql);
PG_FUNCTION_INFO_V1(junction_api_key_configured_sql);

/* A key file larger than this is not a key file. */
#define MAX_KEY_FILE_BYTES 4096

/*
 * The API client's settings, defined in junction_http_define_gucs().  Only this file reads them,
 * except junction.auto_backfill, which the backfill worker reads (declared in junction.h).
 */
static char *junction_api_key = NULL;
static char *junction_api_key_file = NULL;
static char *junction_management_key_file = NULL;
/*
 * Parsing an answer into jsonb takes about 16 times its size for Junction's pages (47 times for
 * an array of one-digit numbers, the most values per byte; measured by test/fault_hostile_api.sh):
 * hence a 16 MB default, and a 32 MB maximum, below which no shape reaches Postgres' 1 GB
 * allocation limit (an array's JsonbValues: 32 bytes per value, one value per 2 bytes).
 */
static int	junction_http_max_response_kb = 16 * 1024;
static char *junction_api_base_url = NULL;
static char *junction_environment = NULL;
static char *junction_region = NULL;
static char *junction_management_key = NULL;
static char *junction_management_base_url = NULL;
static char *junction_org_id = NULL;
static char *junction_team_id = NULL;
static int	junction_http_timeout_ms = 30000;
static int	junction_http_retries = 3;
bool		junction_auto_backfill = true;

static CURL *curl_handle = NULL;

/* What one transfer collected. */
typedef struct Transfer
{
	StringInfo	body;
	size_t		limit;			/* junction.http_max_response_size in bytes */
	bool		too_big;		/* refused: announced or received more than limit */
	int64		announced;		/* Content-Length when it alone exceeded limit, else -1 */
	char		retry_after[64];
} Transfer;

static char *clip(const char *s, int max);
static char *junction_redact(const char *s, List *extra);

/* Validate the environment GUC. */
static bool
check_environment(char **newval, void **extra, GucSource source)
{
	return **newval == '\0' || strcmp(*newval, "production") == 0 || strcmp(*newval, "sandbox") == 0;
}

/* Validate the region GUC. */
static bool
check_region(char **newval, void **extra, GucSource source)
{
	return **newval == '\0' || strcmp(*newval, "us") == 0 || strcmp(*newval, "eu") == 0;
}

/* Validate a base URL override: http(s)://host[:port][/prefix], no query, no userinfo. */
static bool
check_base_url(char **newval, void **extra, GucSource source)
{
	const char *u = *newval;
	const char *host;

	if (*u == '\0')
		return true;
	if (strncmp(u, "https://", 8) == 0)
		host = u + 8;
	else if (strncmp(u, "http://", 7) == 0)
		host = u + 7;
	else
	{
		GUC_check_errdetail("The base URL must start with https:// or http://.");
		return false;
	}
	if (*host == '\0' || strpbrk(u, "?#@ \t\r\n") != NULL || u[strlen(u) - 1] == '/')
	{
		GUC_check_errdetail("The base URL must be scheme://host[:port][/prefix] without a trailing slash, query or user info.");
		return false;
	}
	return true;
}

/* Define the API client's GUCs (called from _PG_init). */
void
junction_http_define_gucs(void)
{
	DefineCustomStringVariable("junction.api_key",
							   "Junction team API key, sent as X-Vital-API-Key.",
							   NULL, &junction_api_key, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("junction.api_key_file",
							   "File holding the Junction team API key (read at each request; setting it and junction.api_key both is an error).",
							   "Must be a regular file owned by the database user (mode 0600 or less) or by root (0640 or less).",
							   &junction_api_key_file, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("junction.api_base_url",
							   "Overrides the Junction API base URL (tests, proxies).",
							   "Empty: derived from junction.environment and junction.region, or from the key prefix.",
							   &junction_api_base_url, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY, check_base_url, NULL, NULL);
	DefineCustomStringVariable("junction.environment",
							   "Junction environment: production or sandbox (empty: from the key prefix).",
							   NULL, &junction_environment, "",
							   PGC_SUSET, 0, check_environment, NULL, NULL);
	DefineCustomStringVariable("junction.region",
							   "Junction region: us or eu (empty: from the key prefix).",
							   NULL, &junction_region, "",
							   PGC_SUSET, 0, check_region, NULL, NULL);
	DefineCustomStringVariable("junction.management_key",
							   "Junction Management API key, sent as X-Management-Key.",
							   NULL, &junction_management_key, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("junction.management_key_file",
							   "File holding the Junction Management API key (read at each request; setting it and junction.management_key both is an error).",
							   "Must be a regular file owned by the database user (mode 0600 or less) or by root (0640 or less).",
							   &junction_management_key_file, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("junction.management_base_url",
							   "Overrides the Management API base URL (tests, proxies).",
							   NULL, &junction_management_base_url, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY, check_base_url, NULL, NULL);
	DefineCustomStringVariable("junction.org_id", "Junction organisation id (Management API).",
							   NULL, &junction_org_id, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("junction.team_id", "Junction team id (Management API).",
							   NULL, &junction_team_id, "", PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("junction.http_timeout",
							"Total time allowed for one HTTP attempt to the Junction API.",
							"The connect timeout is the smaller of this and 10 s.",
							&junction_http_timeout_ms, 30000, 100, 600000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("junction.http_retries",
							"Retries after a retryable failure (408, 429, 5xx, connection errors).",
							NULL, &junction_http_retries, 3, 0, 10,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("junction.http_max_response_size",
							"Largest Junction API answer accepted; larger ones are refused before they are read.",
							"Checked against Content-Length and against the bytes received (after decompression). "
							"A call's memory is a small multiple of this (see the README).",
							&junction_http_max_response_kb, 16 * 1024, 64, 32 * 1024,
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomBoolVariable("junction.auto_backfill",
							 "Fetch the data of historical.data.* and workout stream events automatically.",
							 NULL, &junction_auto_backfill, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
}

/* Wipe and free a palloc'd key. */
static void
free_key(char *key)
{
	if (key == NULL)
		return;
	explicit_bzero(key, strlen(key));
	pfree(key);
}

/*
 * Read a key from the file named by a *_file setting (palloc'd, trimmed). The checks follow
 * Postgres' own for ssl_key_file: a regular file, owned by the database user with no group or
 * other access (0600 or less), or owned by root with at most group read (0640 or less).
 * Errors are F0000 (config_file_error) with a hint; with noerror, NULL instead of an error.
 */
static char *
key_from_file(const char *guc, const char *path, bool noerror)
{
	struct stat st;
	char		buf[MAX_KEY_FILE_BYTES + 1];
	char	   *start;
	char	   *end;
	char	   *key;
	int			fd;
	ssize_t		n;
	int			save_errno;

	fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	if (fd < 0)
	{
		if (noerror)
			return NULL;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not open %s \"%s\": %m", guc, path),
				 errhint("Write the key into that file (owned by the database user, mode 0600), or correct %s.", guc)));
	}
	if (fstat(fd, &st) != 0)
	{
		save_errno = errno;
		CloseTransientFile(fd);
		if (noerror)
			return NULL;
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not stat %s \"%s\": %m", guc, path)));
	}
	if (!S_ISREG(st.st_mode) ||
		(st.st_uid != geteuid() && st.st_uid != 0) ||
		(st.st_uid == geteuid() && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0) ||
		(st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO)) != 0) ||
		st.st_size > MAX_KEY_FILE_BYTES)
	{
		CloseTransientFile(fd);
		if (noerror)
			return NULL;
		if (!S_ISREG(st.st_mode))
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("%s \"%s\" is not a regular file", guc, path)));
		if (st.st_uid != geteuid() && st.st_uid != 0)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("%s \"%s\" must be owned by the database user or root", guc, path),
					 errhint("chown postgres \"%s\"; chmod 600 \"%s\"", path, path)));
		if (st.st_size > MAX_KEY_FILE_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("%s \"%s\" is larger than %d bytes", guc, path, MAX_KEY_FILE_BYTES),
					 errhint("The file holds the key alone, on one line.")));
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s \"%s\" has group or world access", guc, path),
				 errdetail("File must have permissions u=rw (0600) or less if owned by the database user, or permissions u=rw,g=r (0640) or less if owned by root."),
				 errhint("chmod 600 \"%s\"", path)));
	}
	n = read(fd, buf, MAX_KEY_FILE_BYTES);
	save_errno = errno;
	CloseTransientFile(fd);
	if (n < 0)
	{
		if (noerror)
			return NULL;
		errno = save_errno;
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not read %s \"%s\": %m", guc, path)));
	}
	buf[n] = '\0';
	/* the key alone: surrounding whitespace (a trailing newline) is not part of it */
	start = buf;
	end = buf + n;
	while (start < end && isspace((unsigned char) *start))
		start++;
	while (end > start && isspace((unsigned char) end[-1]))
		end--;
	*end = '\0';
	for (char *c = start; c < end; c++)
	{
		if ((unsigned char) *c < 0x20 || *c == 0x7f)
		{
			explicit_bzero(buf, sizeof(buf));
			if (noerror)
				return NULL;
			ereport(ERROR,
					(errcode(ERRCODE_CONFIG_FILE_ERROR),
					 errmsg("%s \"%s\" holds more than one line or a control character", guc, path),
					 errhint("The file holds the key alone, on one line.")));
		}
	}
	if (start == end)
	{
		if (noerror)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("%s \"%s\" is empty", guc, path),
				 errhint("Write the key into that file, on one line.")));
	}
	key = pstrdup(start);
	explicit_bzero(buf, sizeof(buf));
	return key;
}

/*
 * The key to send (palloc'd; the caller wipes it with free_key), or NULL when none is set.
 * junction.*_key_file, read now, or junction.*_key; both set is an error (F0000), so that a
 * key left in postgresql.auto.conf is noticed and removed. With noerror, problems give NULL.
 */
static char *
effective_key(bool management, bool noerror)
{
	const char *guc = management ? "junction.management_key" : "junction.api_key";
	const char *fguc = management ? "junction.management_key_file" : "junction.api_key_file";
	const char *key = management ? junction_management_key : junction_api_key;
	const char *file = management ? junction_management_key_file : junction_api_key_file;
	bool		have_key = key != NULL && *key != '\0';
	bool		have_file = file != NULL && *file != '\0';

	if (have_key && have_file)
	{
		if (noerror)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("both %s and %s are set", guc, fguc),
				 errhint("Keep the file and remove the key from the configuration: ALTER SYSTEM RESET %s; SELECT pg_reload_conf();", guc)));
	}
	if (have_file)
		return key_from_file(fguc, file, noerror);
	if (have_key)
		return pstrdup(key);
	return NULL;
}

/* Whether a key is configured (a key setting or a key file), without reading the file. */
bool
junction_api_key_configured(bool management)
{
	const char *key = management ? junction_management_key : junction_api_key;
	const char *file = management ? junction_management_key_file : junction_api_key_file;

	return (key != NULL && *key != '\0') || (file != NULL && *file != '\0');
}

/* junction._api_key_configured(management) -> whether requests have a key to send */
Datum
junction_api_key_configured_sql(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(junction_api_key_configured(PG_GETARG_BOOL(0)));
}

/* The data API's base URL: the override, else environment/region (or the key's prefix). */
static const char *
data_base_url(const char *key)
{
	const char *env = junction_environment;
	const char *region = junction_region;

	if (key == NULL)
		key = "";

	if (junction_api_base_url && *junction_api_base_url)
		return junction_api_base_url;
	if (*env == '\0')
		env = strncmp(key, "sk_", 3) == 0 ? "sandbox" : "production";
	if (*region == '\0')
		region = (strncmp(key + (strlen(key) >= 3 ? 3 : 0), "eu_", 3) == 0) ? "eu" : "us";
	if (strcmp(env, "sandbox") == 0)
		return strcmp(region, "eu") == 0 ? "https://api.sandbox.eu.junction.com"
			: "https://api.sandbox.us.junction.com";
	return strcmp(region, "eu") == 0 ? "https://api.eu.junction.com" : "https://api.us.junction.com";
}

/* Append one query parameter, URL-encoded. */
static void
append_param(StringInfo url, bool *first, const char *key, int keylen, const char *val, int vallen)
{
	char	   *k = curl_easy_escape(curl_handle, key, keylen);
	char	   *v = curl_easy_escape(curl_handle, val, vallen);

	appendStringInfoChar(url, *first ? '?' : '&');
	appendStringInfo(url, "%s=%s", k, v);
	curl_free(k);
	curl_free(v);
	*first = false;
}

/* Text of a scalar JSON value for a query string; NULL for null. */
static char *
scalar_text(JsonbValue *v, int *len)
{
	char	   *s;

	switch (v->type)
	{
		case jbvString:
			*len = v->val.string.len;
			return v->val.string.val;
		case jbvNumeric:
			s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
			*len = strlen(s);
			return s;
		case jbvBool:
			s = v->val.boolean ? "true" : "false";
			*len = strlen(s);
			return s;
		case jbvNull:
			return NULL;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("query parameters must be scalars or arrays of scalars")));
	}
	return NULL;
}

/* Append a jsonb object as a query string (arrays repeat the key, nulls are skipped). */
static void
append_query(StringInfo url, Jsonb *query)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	bool		first = true;
	char	   *key = NULL;
	int			keylen = 0;
	int			depth = 0;

	if (query == NULL)
		return;
	if (!JB_ROOT_IS_OBJECT(query))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("query must be a JSON object")));
	it = JsonbIteratorInit(&query->root);
	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		char	   *s;
		int			len;

		if (tok == WJB_BEGIN_OBJECT || tok == WJB_BEGIN_ARRAY)
		{
			if (++depth > 2 || (tok == WJB_BEGIN_OBJECT && depth > 1))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("query parameters must be scalars or arrays of scalars")));
		}
		else if (tok == WJB_END_OBJECT || tok == WJB_END_ARRAY)
			depth--;
		else if (tok == WJB_KEY)
		{
			key = v.val.string.val;
			keylen = v.val.string.len;
		}
		else if (tok == WJB_VALUE || tok == WJB_ELEM)
		{
			s = scalar_text(&v, &len);
			if (s != NULL)
				append_param(url, &first, key, keylen, s, len);
		}
	}
}

/*
 * curl write callback: collect the body; past junction.http_max_response_size, abort the
 * transfer (returning less than n makes curl stop with CURLE_WRITE_ERROR).
 */
static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	Transfer   *t = (Transfer *) arg;
	size_t		n = size * nmemb;

	if ((size_t) t->body->len + n > t->limit)
	{
		t->too_big = true;
		return 0;
	}
	appendBinaryStringInfo(t->body, data, (int) n);
	return n;
}

/*
 * curl header callback: remember Retry-After; refuse an answer whose Content-Length is over
 * junction.http_max_response_size before any of its body is read (with compression it is
 * the compressed size, never more than what on_body would collect).
 */
static size_t
on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	Transfer   *t = (Transfer *) arg;
	size_t		n = size * nmemb;

	if (n > 15 && pg_strncasecmp(data, "content-length:", 15) == 0)
	{
		char		num[32];
		size_t		len = Min(n - 15, sizeof(num) - 1);
		char	   *endp;
		long long	cl;

		memcpy(num, data + 15, len);
		num[len] = '\0';
		errno = 0;
		cl = strtoll(num, &endp, 10);
		if (errno == 0 && endp != num && cl > 0 && (unsigned long long) cl > t->limit)
		{
			t->too_big = true;
			t->announced = cl;
			return 0;
		}
	}

	if (n > 12 && pg_strncasecmp(data, "retry-after:", 12) == 0)
	{
		size_t		len = Min(n - 12, sizeof(t->retry_after) - 1);

		memcpy(t->retry_after, data + 12, len);
		t->retry_after[len] = '\0';
	}
	return n;
}

/* curl progress callback: abort on query cancel, statement_timeout or shutdown. */
static int
on_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow)
{
	return (QueryCancelPending || ProcDiePending) ? 1 : 0;
}

/* Sleep for ms, waking for interrupts (cancel, timeout, shutdown). */
static void
sleep_interruptible(int64 ms)
{
	TimestampTz end = GetCurrentTimestamp() + ms * 1000;

	for (;;)
	{
		long		left;

		CHECK_FOR_INTERRUPTS();
		left = (long) ((end - GetCurrentTimestamp()) / 1000);
		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(left, 1000), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * The shared API pause (junction_shared->api_paused_until): a 429 sets it, every backend waits it
 * out before its next data API request, so several backfill workers slow down together.
 */
static void
api_pause_wait(void)
{
	TimestampTz until;
	TimestampTz now = GetCurrentTimestamp();

	if (junction_shared == NULL)
		return;
	SpinLockAcquire(&junction_shared->mutex);
	until = junction_shared->api_paused_until;
	SpinLockRelease(&junction_shared->mutex);
	if (until > now)
	{
		elog(DEBUG1, "junction API: paused for %lld ms after a 429", (long long) ((until - now) / 1000));
		sleep_interruptible((until - now) / 1000);
	}
}

/* Extend the shared pause to at least wait_ms from now. */
static void
api_pause_extend(int64 wait_ms)
{
	TimestampTz until = GetCurrentTimestamp() + wait_ms * 1000;

	if (junction_shared == NULL)
		return;
	SpinLockAcquire(&junction_shared->mutex);
	if (until > junction_shared->api_paused_until)
		junction_shared->api_paused_until = until;
	junction_shared->api_pauses++;
	SpinLockRelease(&junction_shared->mutex);
}

/* Transport errors worth another attempt. */
static bool
curl_code_is_retryable(CURLcode rc, bool idempotent)
{
	switch (rc)
	{
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_CONNECT:
			return true;		/* nothing was sent */
		case CURLE_OPERATION_TIMEDOUT:
		case CURLE_GOT_NOTHING:
		case CURLE_RECV_ERROR:
		case CURLE_SEND_ERROR:
		case CURLE_PARTIAL_FILE:
			return idempotent;
		default:
			return false;
	}
}

/* Set up the per-backend handle once. */
static void
ensure_handle(void)
{
	if (curl_handle != NULL)
		return;
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK ||
		(curl_handle = curl_easy_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialise libcurl")));
}

/* The checks every request passes before anything is sent; returns the key to send (free_key it). */
static char *
check_request(bool management, const char *method, const char *path, const char *req_body)
{
	char	   *key;

	if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0 && strcmp(method, "PUT") != 0 &&
		strcmp(method, "PATCH") != 0 && strcmp(method, "DELETE") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unsupported HTTP method \"%s\"", method),
				 errhint("Use GET, POST, PUT, PATCH or DELETE.")));
	if (req_body != NULL && strcmp(method, "GET") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a GET request takes no body"),
				 errhint("Pass GET parameters as the query argument.")));
	if (path[0] != '/' || strpbrk(path, "?# \t\r\n") != NULL || strstr(path, "..") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid API path \"%s\"", path),
				 errhint("A path starts with / and has no query string, fragment, spaces or \"..\"; pass query parameters as jsonb.")));
	key = effective_key(management, false);
	if (key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("%s is not set", management ? "junction.management_key" : "junction.api_key"),
				 errhint("As a superuser, put the key in a file only the database user can read, then: ALTER SYSTEM SET %s = '/path/to/file'; SELECT pg_reload_conf();",
						 management ? "junction.management_key_file" : "junction.api_key_file")));
	return key;
}

/* The full URL of a request: base, path and query string (palloc'd). */
static char *
request_url(bool management, const char *key, const char *path, Jsonb *query)
{
	const char *base = management
		? ((junction_management_base_url && *junction_management_base_url)
		   ? junction_management_base_url : "https://api.management.junction.com")
		: data_base_url(key);
	StringInfoData url;

	initStringInfo(&url);
	appendStringInfo(&url, "%s%s", base, path);
	append_query(&url, query);
	return url.data;
}

/*
 * Set every option of one transfer on the handle. The header list (which holds the key) is
 * returned for the caller to free with free_headers() once the transfer is over.
 */
static struct curl_slist *
setup_transfer(bool management, const char *key, const char *method, const char *url,
			   const char *req_body, Transfer *t, char *errbuf)
{
	struct curl_slist *hdrs = NULL;
	char	   *auth;

	auth = psprintf("%s: %s", management ? "X-Management-Key" : "X-Vital-API-Key", key);
	hdrs = curl_slist_append(hdrs, auth);
	/* curl copied it: the palloc'd copy of the key is not needed any more */
	explicit_bzero(auth, strlen(auth));
	pfree(auth);
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	if (req_body)
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");

	errbuf[0] = '\0';
	curl_easy_reset(curl_handle);	/* keeps the connection cache */
	curl_easy_setopt(curl_handle, CURLOPT_URL, url);
	curl_easy_setopt(curl_handle, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(curl_handle, CURLOPT_USERAGENT, "junction/" JUNCTION_VERSION " (PostgreSQL extension)");
	curl_easy_setopt(curl_handle, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(curl_handle, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(curl_handle, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(curl_handle, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(curl_handle, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl_handle, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(curl_handle, CURLOPT_TIMEOUT_MS, (long) junction_http_timeout_ms);
	curl_easy_setopt(curl_handle, CURLOPT_CONNECTTIMEOUT_MS, (long) Min(junction_http_timeout_ms, 10000));
	curl_easy_setopt(curl_handle, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(curl_handle, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(curl_handle, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(curl_handle, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(curl_handle, CURLOPT_HEADERDATA, t);
	curl_easy_setopt(curl_handle, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl_handle, CURLOPT_XFERINFOFUNCTION, on_progress);
	if (strcmp(method, "GET") != 0)
		curl_easy_setopt(curl_handle, CURLOPT_CUSTOMREQUEST, method);
	if (req_body)
	{
		curl_easy_setopt(curl_handle, CURLOPT_POSTFIELDS, req_body);
		curl_easy_setopt(curl_handle, CURLOPT_POSTFIELDSIZE, (long) strlen(req_body));
	}
	else if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0 || strcmp(method, "PATCH") == 0)
	{
		curl_easy_setopt(curl_handle, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(curl_handle, CURLOPT_POSTFIELDSIZE, 0L);
	}
	return hdrs;
}

/* Free a header list, wiping the key in it first. */
static void
free_headers(struct curl_slist *hdrs)
{
	for (struct curl_slist *h = hdrs; h != NULL; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(hdrs);
}

/*
 * One prefetched GET: junction._api_prefetch() sends the request for the next page and returns;
 * the server prepares it while the caller loads the current page; the next junction_http_request
 * for the same URL, key and API takes its answer as its first attempt. Anything else (another
 * request, the end of the transaction; in a backfill worker, an abort) abandons it. All of it lives outside any memory context
 * that a transaction reset would free.
 */
typedef struct Prefetch
{
	bool		active;			/* the handle is on the multi handle */
	bool		management;
	char	   *url;			/* TopMemoryContext */
	char	   *key;			/* TopMemoryContext; wiped when released */
	struct curl_slist *hdrs;
	StringInfoData body;		/* TopMemoryContext */
	Transfer	t;
	char		errbuf[CURL_ERROR_SIZE];
} Prefetch;

static CURLM *curl_multi = NULL;
static Prefetch prefetch;
static bool prefetch_callback_registered = false;

/* Free what a prefetch holds, wiping the key. */
static void
prefetch_free(void)
{
	free_headers(prefetch.hdrs);
	prefetch.hdrs = NULL;
	explicit_bzero(prefetch.key, strlen(prefetch.key));
	pfree(prefetch.key);
	pfree(prefetch.url);
	pfree(prefetch.body.data);
	prefetch.key = prefetch.url = NULL;
	prefetch.body.data = NULL;
}

/* Abandon the prefetched request, if any (closes its connection if it was not finished). */
static void
prefetch_release(void)
{
	if (!prefetch.active)
		return;
	prefetch.active = false;
	curl_multi_remove_handle(curl_multi, curl_handle);
	prefetch_free();
}

/*
 * A backfill worker keeps its prefetch across a commit: it commits every page (a checkpoint), and
 * its next transaction asks for exactly the prefetched page. Set by junction_backfill_main.
 */
bool		junction_prefetch_across_commit = false;

/* A prefetch never outlives its transaction (but in a backfill worker, outlives its commit). */
static void
prefetch_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT && junction_prefetch_across_commit)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE ||
		event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PARALLEL_COMMIT)
		prefetch_release();
}

/* Start a GET in the background (see Prefetch). */
static void
prefetch_start(bool management, const char *path, Jsonb *query)
{
	char	   *key = check_request(management, "GET", path, NULL);
	char	   *url;
	MemoryContext old;
	int			running;
	TimestampTz deadline;

	prefetch_release();
	if (!management)
		api_pause_wait();
	ensure_handle();
	if (curl_multi == NULL && (curl_multi = curl_multi_init()) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialise libcurl")));
	if (!prefetch_callback_registered)
	{
		RegisterXactCallback(prefetch_xact_callback, NULL);
		prefetch_callback_registered = true;
	}
	url = request_url(management, key, path, query);
	old = MemoryContextSwitchTo(TopMemoryContext);
	prefetch.url = pstrdup(url);
	prefetch.key = pstrdup(key);
	initStringInfo(&prefetch.body);
	MemoryContextSwitchTo(old);
	free_key(key);
	key = prefetch.key;
	prefetch.management = management;
	memset(&prefetch.t, 0, sizeof(prefetch.t));
	prefetch.t.body = &prefetch.body;
	prefetch.t.limit = (size_t) junction_http_max_response_kb * 1024;
	prefetch.t.announced = -1;
	prefetch.hdrs = setup_transfer(management, key, "GET", prefetch.url, NULL, &prefetch.t, prefetch.errbuf);
	if (curl_multi_add_handle(curl_multi, curl_handle) != CURLM_OK)
	{
		prefetch_free();
		return;					/* no prefetch: the page is fetched when asked for */
	}
	prefetch.active = true;

	/*
	 * Send the request now (connecting first if the kept-alive connection is gone); the answer is
	 * read when the page is asked for.
	 */
	deadline = GetCurrentTimestamp() + (TimestampTz) Min(junction_http_timeout_ms, 10000) * 1000;
	for (;;)
	{
		long		sent = 0;

		if (curl_multi_perform(curl_multi, &running) != CURLM_OK || running == 0)
			break;				/* over already (an error, or a tiny answer): read later */
		if (curl_easy_getinfo(curl_handle, CURLINFO_REQUEST_SIZE, &sent) == CURLE_OK && sent > 0)
			break;
		if (GetCurrentTimestamp() >= deadline)
			break;
		(void) curl_multi_poll(curl_multi, NULL, 0, 10, NULL);
		CHECK_FOR_INTERRUPTS();		/* on error, the transaction's end releases the prefetch */
	}
}

/*
 * Finish the prefetched transfer: its result code, with t->body and t's flags filled.
 * Waits in short polls so that cancel and statement_timeout are seen within 100 ms.
 */
static CURLcode
prefetch_finish(Transfer *t, StringInfo body, char *errbuf)
{
	CURLcode	rc = CURLE_OK;
	CURLMsg    *msg;
	int			running = 1;
	int			left;

	pgstat_report_wait_start(PG_WAIT_EXTENSION);
	for (;;)
	{
		if (curl_multi_perform(curl_multi, &running) != CURLM_OK)
		{
			rc = CURLE_RECV_ERROR;
			break;
		}
		if (running == 0)
			break;
		(void) curl_multi_poll(curl_multi, NULL, 0, 100, NULL);
		CHECK_FOR_INTERRUPTS();		/* on error, the transaction's end releases the prefetch */
	}
	pgstat_report_wait_end();
	while ((msg = curl_multi_info_read(curl_multi, &left)) != NULL)
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == curl_handle)
			rc = msg->data.result;
	*t = prefetch.t;
	t->body = body;
	resetStringInfo(body);
	appendBinaryStringInfo(body, prefetch.body.data, prefetch.body.len);
	strlcpy(errbuf, prefetch.errbuf, CURL_ERROR_SIZE);
	prefetch_release();
	return rc;
}

/* Whether the prefetched request is this one. */
static bool
prefetch_matches(bool management, const char *method, const char *url, const char *key)
{
	return prefetch.active && prefetch.management == management && strcmp(method, "GET") == 0 &&
		strcmp(prefetch.url, url) == 0 && strcmp(prefetch.key, key) == 0;
}

/*
 * Every answer is checked before anything parses or shows it: JSON is UTF-8 (RFC 8259), and
 * jsonb would store invalid bytes as they are, which pg_dump cannot restore. A 2xx answer that
 * is not valid UTF-8 is an error (22021, without the bytes); an error answer's body is replaced
 * by a note so that its status still gives the error. In a database whose encoding is not UTF-8
 * a valid answer is converted to it (an untranslatable character is Postgres' usual 22P05).
 * A NUL byte is left to the JSON check (22P02).
 */
static void
check_encoding(const char *method, const char *path, long status, StringInfo body)
{
	char	   *conv;

	if (body->len == 0 || memchr(body->data, '\0', body->len) != NULL)
		return;
	if (!pg_verify_mbstr(PG_UTF8, body->data, body->len, true))
	{
		int			len = body->len;
		int			valid = pg_encoding_verifymbstr(PG_UTF8, body->data, body->len);

		if (status >= 200 && status <= 299)
			ereport(ERROR,
					(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
					 errmsg("junction API %s %s returned an answer that is not valid UTF-8", method, path),
					 errdetail("The answer has %d bytes; the first invalid byte sequence starts at byte %d. Nothing was stored.",
							   len, valid + 1),
					 errhint("JSON must be UTF-8; jsonb would keep such bytes as they are, and pg_dump could not restore them.")));
		resetStringInfo(body);
		appendStringInfo(body, "{\"detail\": \"(the answer of %d bytes is not valid UTF-8; first invalid byte sequence at byte %d)\"}",
						 len, valid + 1);
		return;
	}
	if (GetDatabaseEncoding() == PG_UTF8 || GetDatabaseEncoding() == PG_SQL_ASCII)
		return;
	conv = pg_any_to_server(body->data, body->len, PG_UTF8);
	if (conv != body->data)
	{
		resetStringInfo(body);
		appendStringInfoString(body, conv);
		pfree(conv);
	}
}

/*
 * One request to the Junction data (management=false) or Management API,
 * with retries.  Fills body, returns the final HTTP status.  Transport
 * failures that survive the retries raise an error; HTTP statuses do not.
 */
static long
junction_http_request(bool management, const char *method, const char *path,
					  Jsonb *query, const char *req_body, StringInfo body)
{
	char	   *key = check_request(management, method, path, req_body);
	bool		idempotent = strcmp(method, "POST") != 0 && strcmp(method, "PATCH") != 0;
	char	   *url;
	char		errbuf[CURL_ERROR_SIZE];
	int			attempt;

	ensure_handle();
	url = request_url(management, key, path, query);

	for (attempt = 0;; attempt++)
	{
		Transfer	t;
		CURLcode	rc;
		long		status = 0;
		int64		wait_ms;

		memset(&t, 0, sizeof(t));
		t.body = body;
		t.limit = (size_t) junction_http_max_response_kb * 1024;
		t.announced = -1;
		resetStringInfo(body);

		if (attempt == 0 && prefetch_matches(management, method, url, key))
			rc = prefetch_finish(&t, body, errbuf);
		else
		{
			struct curl_slist *hdrs;

			prefetch_release();	/* another request: the handle is needed */
			if (!management)
				api_pause_wait();
			hdrs = setup_transfer(management, key, method, url, req_body, &t, errbuf);
			pgstat_report_wait_start(PG_WAIT_EXTENSION);
			rc = curl_easy_perform(curl_handle);
			pgstat_report_wait_end();
			free_headers(hdrs);
		}

		if (rc == CURLE_ABORTED_BY_CALLBACK)
		{
			CHECK_FOR_INTERRUPTS();
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("junction API %s %s canceled", method, path)));
		}
		if (t.too_big)
		{
			free_key(key);
			resetStringInfo(body);
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("junction API %s %s: the answer is larger than junction.http_max_response_size (%d kB)",
							method, path, junction_http_max_response_kb),
					 t.announced >= 0
					 ? errdetail("Content-Length is %lld bytes; the transfer was refused before its body was read.",
								 (long long) t.announced)
					 : errdetail("The transfer was aborted after %zu bytes.", t.limit),
					 errhint("Ask for less (a shorter date range, a smaller page), or raise junction.http_max_response_size (a superuser setting; parsing an answer takes about 16 to 50 times its size in memory).")));
		}
		if (rc != CURLE_OK)
		{
			if (attempt >= junction_http_retries || !curl_code_is_retryable(rc, idempotent))
				ereport(ERROR,
						(errcode(ERRCODE_CONNECTION_FAILURE),
						 errmsg("junction API %s %s failed: %s", method, path,
								errbuf[0] ? errbuf : curl_easy_strerror(rc)),
						 errdetail("%d attempt(s); junction.http_timeout is %d ms.",
								   attempt + 1, junction_http_timeout_ms)));
			wait_ms = jx_backoff_ms(attempt, -1, pg_prng_double(&pg_global_prng_state));
		}
		else
		{
			curl_easy_getinfo(curl_handle, CURLINFO_RESPONSE_CODE, &status);
			if (!jx_status_is_retryable(status) || attempt >= junction_http_retries ||
				(!idempotent && status != 429 && status != 503))
			{
				free_key(key);
				check_encoding(method, path, status, body);
				return status;
			}
			wait_ms = jx_backoff_ms(attempt, jx_parse_retry_after(t.retry_after[0] ? t.retry_after : NULL,
																  time(NULL)),
									pg_prng_double(&pg_global_prng_state));
			if (status == 429 && !management)
				api_pause_extend(wait_ms);
		}
		elog(DEBUG1, "junction API %s %s: retry %d in %lld ms", method, path, attempt + 1,
			 (long long) wait_ms);
		sleep_interruptible(wait_ms);
	}
}

/*
 * junction._api_prefetch(path, query): send a data API GET now and return; the next identical
 * junction_api call in this transaction receives its answer (see Prefetch).
 */
Datum
junction_api_prefetch(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("path must not be null")));
	prefetch_start(false, text_to_cstring(PG_GETARG_TEXT_PP(0)),
				   PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1));
	PG_RETURN_VOID();
}

/*
 * Parse a response body as jsonb; NULL for an empty body; an error naming the request for bad JSON.
 * One pass: jsonb_in's syntax error (22P02) is replaced by ours, any other error goes through.
 */
static Jsonb *
junction_parse_response(const char *method, const char *path, StringInfo body)
{
	MemoryContext cxt = CurrentMemoryContext;
	Jsonb	   *res = NULL;
	volatile bool bad = false;

	if (body->len == 0)
		return NULL;
	if (memchr(body->data, '\0', body->len) != NULL)
		bad = true;				/* jsonb_in reads a C string: it would stop at the NUL */
	else
	{
		PG_TRY();
		{
			res = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(body->data)));
		}
		PG_CATCH();
		{
			ErrorData  *edata;

			MemoryContextSwitchTo(cxt);
			edata = CopyErrorData();
			if (edata->sqlerrcode != ERRCODE_INVALID_TEXT_REPRESENTATION)
				PG_RE_THROW();
			FlushErrorState();
			FreeErrorData(edata);
			bad = true;
		}
		PG_END_TRY();
	}
	if (bad)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
				 errmsg("junction API %s %s returned invalid JSON", method, path),
				 errdetail("The response starts with: %s", clip(junction_redact(body->data, NIL), 80))));
	return res;
}

/* Add a string never to repeat to the list (too short ones would redact everything). */
static List *
add_needle(List *needles, const char *s, int len)
{
	if (s != NULL && len >= 8)
		needles = lappend(needles, pnstrdup(s, len));
	return needles;
}

/* Longest first, so that a secret is replaced whole before its base64 body alone is looked for. */
static int
needle_cmp(const ListCell *a, const ListCell *b)
{
	return (int) strlen((char *) lfirst(b)) - (int) strlen((char *) lfirst(a));
}

/* The signing secrets in junction.webhook_secrets, read whatever the caller may read. */
static List *
add_webhook_secrets(List *needles)
{
	Oid			nsp;
	Oid			relid;
	Relation	rel;
	AttrNumber	att;
	Snapshot	snap;
	TableScanDesc scan;
	HeapTuple	tup;

	if (!IsTransactionState() ||
		!OidIsValid(nsp = get_namespace_oid("junction", true)) ||
		!OidIsValid(relid = get_relname_relid("webhook_secrets", nsp)) ||
		(att = get_attnum(relid, "secret")) == InvalidAttrNumber)
		return needles;
	rel = table_open(relid, AccessShareLock);
	snap = RegisterSnapshot(GetLatestSnapshot());
	scan = table_beginscan(rel, snap, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, att, RelationGetDescr(rel), &isnull);
		char	   *sec;
		char	   *tok;
		char	   *save;

		if (isnull)
			continue;
		sec = TextDatumGetCString(d);
		/* a row may hold several secrets separated by spaces; each with and without whsec_ */
		for (tok = strtok_r(sec, " \t\r\n", &save); tok != NULL; tok = strtok_r(NULL, " \t\r\n", &save))
		{
			needles = add_needle(needles, tok, strlen(tok));
			if (strncmp(tok, "whsec_", 6) == 0)
				needles = add_needle(needles, tok + 6, strlen(tok + 6));
		}
		explicit_bzero(sec, strlen(sec));
		pfree(sec);
	}
	table_endscan(scan);
	UnregisterSnapshot(snap);
	table_close(rel, AccessShareLock);
	return needles;
}

/* Characters of a whsec_ secret's body (standard and URL-safe base64). */
static bool
is_secret_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		c == '+' || c == '/' || c == '=' || c == '_' || c == '-';
}

/*
 * The one redaction of every text an API answer puts in an error (data and Management API,
 * C and SQL callers): the data API key and the Management key (from their settings or files),
 * every signing secret in junction.webhook_secrets with and without its whsec_ prefix, the
 * strings in extra (what the request sent, e.g. a new secret) become "[redacted]", and
 * anything else shaped like whsec_<base64> becomes "whsec_[redacted]". palloc'd.
 */
static char *
junction_redact(const char *s, List *extra)
{
	List	   *needles = NIL;
	ListCell   *lc;
	StringInfoData out;
	char	   *cur = pstrdup(s);
	const char *p;
	char	   *k;

	for (int m = 0; m <= 1; m++)
	{
		if ((k = effective_key(m == 1, true)) != NULL)
		{
			needles = add_needle(needles, k, strlen(k));
			free_key(k);
		}
	}
	foreach(lc, extra)
		needles = add_needle(needles, (char *) lfirst(lc), strlen((char *) lfirst(lc)));
	needles = add_webhook_secrets(needles);
	list_sort(needles, needle_cmp);

	foreach(lc, needles)
	{
		char	   *needle = (char *) lfirst(lc);
		size_t		nlen = strlen(needle);
		char	   *hit;

		if (strstr(cur, needle) == NULL)
			continue;
		initStringInfo(&out);
		p = cur;
		while ((hit = strstr(p, needle)) != NULL)
		{
			appendBinaryStringInfo(&out, p, hit - p);
			appendStringInfoString(&out, "[redacted]");
			p = hit + nlen;
		}
		appendStringInfoString(&out, p);
		pfree(cur);
		cur = out.data;
	}
	foreach(lc, needles)
		explicit_bzero(lfirst(lc), strlen((char *) lfirst(lc)));
	list_free_deep(needles);

	/* whsec_ shapes not configured anywhere */
	initStringInfo(&out);
	p = cur;
	for (;;)
	{
		const char *hit = strstr(p, "whsec_");
		const char *e;

		if (hit == NULL)
			break;
		e = hit + 6;
		while (is_secret_char(*e))
			e++;
		appendBinaryStringInfo(&out, p, hit - p);
		appendStringInfoString(&out, e > hit + 6 ? "whsec_[redacted]" : "whsec_");
		p = e;
	}
	appendStringInfoString(&out, p);
	explicit_bzero(cur, strlen(cur));
	pfree(cur);
	return out.data;
}

/* The first max bytes of s, never cutting a character in two (palloc'd). */
static char *
clip(const char *s, int max)
{
	int			len = strlen(s);

	return pnstrdup(s, len <= max ? len : pg_mbcliplen(s, len, max));
}

/* The strings of a text[] argument as a List of C strings (NULLs skipped). */
static List *
text_array_list(ArrayType *arr)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *out = NIL;

	if (arr == NULL)
		return NIL;
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			out = lappend(out, TextDatumGetCString(elems[i]));
	return out;
}

/* junction._redact(s text, extra text[] DEFAULT NULL) -> s with keys and secrets redacted */
Datum
junction_redact_sql(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	PG_RETURN_TEXT_P(cstring_to_text(junction_redact(text_to_cstring(PG_GETARG_TEXT_PP(0)),
													 PG_ARGISNULL(1) ? NIL
													 : text_array_list(PG_GETARG_ARRAYTYPE_P(1)))));
}

/*
 * Junction's "detail" text from an error body (or the body's start), redacted before it is
 * cut to 200 bytes (so that no cut-off part of a secret survives).
 */
static char *
error_detail(StringInfo body, List *extra)
{
	JsonLexContext *lex;
	Jsonb	   *j;
	JsonbValue *v;

	if (body->len == 0)
		return pstrdup("(empty response)");
	lex = makeJsonLexContextCstringLen(body->data, body->len, GetDatabaseEncoding(), false);
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		return clip(junction_redact(body->data, extra), 200);
	j = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(body->data)));
	if (JB_ROOT_IS_OBJECT(j) &&
		(v = getKeyJsonValueFromContainer(&j->root, "detail", 6, NULL)) != NULL)
	{
		if (v->type == jbvString)
			return junction_redact(pnstrdup(v->val.string.val, v->val.string.len), extra);
		if (v->type == jbvBinary)
			return junction_redact(JsonbToCString(NULL, v->val.binary.data, v->val.binary.len), extra);
	}
	return clip(junction_redact(body->data, extra), 200);
}

/*
 * Raise the SQL error for a non-2xx answer, for the data and the Management API alike: the one
 * place an HTTP status becomes a SQLSTATE (junction_api, and SQL wrappers through
 * junction._raise_http_error), with Junction's detail redacted by junction_redact.
 * extra: strings the request sent that must not be repeated (e.g. a new signing secret); when
 * there are any, the statement (which may hold them as literals) is kept out of the log.
 */
static void
raise_http_error(bool management, const char *method, const char *path,
				 long status, StringInfo body, List *extra)
{
	int			code;
	char	   *detail = error_detail(body, extra);

	if (status == 401 || status == 403)
		code = ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION;
	else if (status == 404)
		code = ERRCODE_UNDEFINED_OBJECT;
	else if (status == 429)
		code = ERRCODE_CONFIGURATION_LIMIT_EXCEEDED;
	else if (status >= 400 && status < 500)
		code = ERRCODE_INVALID_PARAMETER_VALUE;
	else
		code = ERRCODE_EXTERNAL_ROUTINE_EXCEPTION;
	ereport(ERROR,
			(errcode(code),
			 errmsg("junction %sAPI %s %s failed with HTTP %ld", management ? "Management " : "",
					method, path, status),
			 errdetail("%s", detail),
			 extra != NIL ? errhidestmt(true) : 0,
			 (status == 401 || status == 403)
			 ? (management
				? errhint("Check junction.management_key_file (or junction.management_key): the Management API takes an organisation Management key (mg_...), not a team API key.")
				: errhint("Check junction.api_key_file (or junction.api_key): a superuser writes the key to a file only the database user can read, then ALTER SYSTEM SET junction.api_key_file = '/path/to/file'; SELECT pg_reload_conf();"))
			 : 0));
}

/*
 * junction._raise_http_error(management, method, path, status, body jsonb, redact text[])
 *   raises what junction_api raises for that answer: for SQL wrappers of junction._api_request.
 */
Datum
junction_raise_http_error_sql(PG_FUNCTION_ARGS)
{
	StringInfoData body;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("management, method, path and status must not be null")));
	initStringInfo(&body);
	if (!PG_ARGISNULL(4))
		appendStringInfoString(&body, JsonbToCString(NULL, &PG_GETARG_JSONB_P(4)->root, -1));
	raise_http_error(PG_GETARG_BOOL(0), text_to_cstring(PG_GETARG_TEXT_PP(1)),
					 text_to_cstring(PG_GETARG_TEXT_PP(2)), (long) PG_GETARG_INT32(3), &body,
					 PG_ARGISNULL(5) ? NIL : text_array_list(PG_GETARG_ARRAYTYPE_P(5)));
	PG_RETURN_VOID();
}

/* Upper-cased copy of a text argument. */
static char *
method_arg(text *t)
{
	char	   *m = text_to_cstring(t);
	char	   *p;

	for (p = m; *p; p++)
		*p = pg_toupper((unsigned char) *p);
	return m;
}

/* junction_api(method, path, query, body) -> jsonb; raises on a non-2xx answer */
Datum
junction_api(PG_FUNCTION_ARGS)
{
	char	   *method;
	char	   *path;
	Jsonb	   *query = PG_ARGISNULL(2) ? NULL : PG_GETARG_JSONB_P(2);
	char	   *req = PG_ARGISNULL(3) ? NULL : JsonbToCString(NULL, &PG_GETARG_JSONB_P(3)->root, -1);
	StringInfoData body;
	long		status;
	Jsonb	   *res;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("method and path must not be null")));
	method = method_arg(PG_GETARG_TEXT_PP(0));
	path = text_to_cstring(PG_GETARG_TEXT_PP(1));
	initStringInfo(&body);
	status = junction_http_request(false, method, path, query, req, &body);
	if (status < 200 || status > 299)
		raise_http_error(false, method, path, status, &body, NIL);
	res = junction_parse_response(method, path, &body);
	if (res == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(res);
}

/*
 * junction._api_page(path, query) -> jsonb: GET of one timeseries page for the bulk loader, as
 * junction_api, but with each group's data array left in the page's text (samples.c,
 * junction_page_skeleton); a body without one is parsed whole, as junction_api does.
 */
Datum
junction_api_page(PG_FUNCTION_ARGS)
{
	char	   *path;
	Jsonb	   *query = PG_ARGISNULL(1) ? NULL : PG_GETARG_JSONB_P(1);
	StringInfoData body;
	long		status;
	Jsonb	   *res;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("path must not be null")));
	path = text_to_cstring(PG_GETARG_TEXT_PP(0));
	initStringInfo(&body);
	status = junction_http_request(false, "GET", path, query, NULL, &body);
	if (status < 200 || status > 299)
		raise_http_error(false, "GET", path, status, &body, NIL);
	res = junction_page_skeleton(&body);
	if (res == NULL)
		res = junction_parse_response("GET", path, &body);
	if (res == NULL)
		PG_RETURN_NULL();
	PG_RETURN_JSONB_P(res);
}

/*
 * junction._api_request(management, method, path, query, body)
 *   -> (status int, body jsonb): no error for HTTP statuses, so SQL wrappers
 *   can treat some of them (e.g. 400 "user exists") as answers.
 */
Datum
junction_api_request(PG_FUNCTION_ARGS)
{
	bool		management = PG_GETARG_BOOL(0);
	char	   *method = method_arg(PG_GETARG_TEXT_PP(1));
	char	   *path = text_to_cstring(PG_GETARG_TEXT_PP(2));
	Jsonb	   *query = PG_ARGISNULL(3) ? NULL : PG_GETARG_JSONB_P(3);
	char	   *req = PG_ARGISNULL(4) ? NULL : JsonbToCString(NULL, &PG_GETARG_JSONB_P(4)->root, -1);
	StringInfoData body;
	long		status;
	TupleDesc	desc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	Jsonb	   *res = NULL;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "junction._api_request must return a record");
	initStringInfo(&body);
	status = junction_http_request(management, method, path, query, req, &body);
	if (status >= 200 && status <= 299)
		res = junction_parse_response(method, path, &body);
	else if (body.len > 0)
	{
		JsonLexContext *lex = makeJsonLexContextCstringLen(body.data, body.len, GetDatabaseEncoding(), false);

		if (pg_parse_json(lex, &nullSemAction) == JSON_SUCCESS)
			res = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(body.data)));
		else
		{
			StringInfoData wrapped;

			/* not JSON: wrap the start of the text as {"detail": "..."} */
			initStringInfo(&wrapped);
			appendStringInfoString(&wrapped, "{\"detail\": ");
			escape_json(&wrapped, clip(junction_redact(body.data, NIL), 500));
			appendStringInfoChar(&wrapped, '}');
			res = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(wrapped.data)));
		}
	}
	values[0] = Int32GetDatum((int32) status);
	if (res)
		values[1] = JsonbPGetDatum(res);
	else
		nulls[1] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(desc, values, nulls)));
}

/* junction._api_base_url(management) -> the base URL requests would go to now */
Datum
junction_api_base_url_of(PG_FUNCTION_ARGS)
{
	bool		management = PG_GETARG_BOOL(0);

	if (management)
		PG_RETURN_TEXT_P(cstring_to_text((junction_management_base_url && *junction_management_base_url)
										 ? junction_management_base_url
										 : "https://api.management.junction.com"));
	{
		char	   *key = effective_key(false, true);
		text	   *url = cstring_to_text(data_base_url(key));

		free_key(key);
		PG_RETURN_TEXT_P(url);
	}
}

/* junction._api_pause(): until when data API requests wait after a 429 (null: no pause), and how many 429s paused them. */
Datum
junction_api_pause(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	TimestampTz until = 0;
	uint64		pauses = 0;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "junction._api_pause must return a record");
	if (junction_shared != NULL)
	{
		SpinLockAcquire(&junction_shared->mutex);
		until = junction_shared->api_paused_until;
		pauses = junction_shared->api_pauses;
		SpinLockRelease(&junction_shared->mutex);
	}
	nulls[0] = (until == 0 || until <= GetCurrentTimestamp());
	values[0] = TimestampTzGetDatum(until);
	values[1] = Int64GetDatum((int64) pauses);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
