/*
 * http.c — the Junction API client (libcurl): one reused handle per backend,
 * a fixed base URL from the GUCs, TLS verification always on, no redirects,
 * connect and total timeouts, query cancel / statement_timeout through the
 * progress callback, retries with Retry-After or exponential backoff, and SQL
 * errors that carry a SQLSTATE, the status, method, path and Junction's
 * detail text — never the key.
 */
#include "postgres.h"

#include <curl/curl.h>

#include "common/jsonapi.h"
#include "access/xact.h"
#include "common/pg_prng.h"
#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "backoff.h"
#include "junction.h"

PG_FUNCTION_INFO_V1(junction_api);
PG_FUNCTION_INFO_V1(junction_api_request);
PG_FUNCTION_INFO_V1(junction_api_base_url_of);
PG_FUNCTION_INFO_V1(junction_api_prefetch);

/* Responses larger than this are refused (a Junction page is a few MB). */
#define MAX_RESPONSE_BYTES (256 * 1024 * 1024)

char	   *junction_api_key = NULL;
char	   *junction_api_base_url = NULL;
char	   *junction_environment = NULL;
char	   *junction_region = NULL;
char	   *junction_management_key = NULL;
char	   *junction_management_base_url = NULL;
char	   *junction_org_id = NULL;
char	   *junction_team_id = NULL;
int			junction_http_timeout_ms = 30000;
int			junction_http_retries = 3;
bool		junction_auto_backfill = true;

static CURL *curl_handle = NULL;

/* What one transfer collected. */
typedef struct Transfer
{
	StringInfo	body;
	bool		too_big;
	char		retry_after[64];
} Transfer;

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
	DefineCustomBoolVariable("junction.auto_backfill",
							 "Fetch the data of historical.data.* and workout stream events automatically.",
							 NULL, &junction_auto_backfill, true,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
}

/* The data API's base URL: the override, else environment/region (or the key prefix). */
static const char *
data_base_url(void)
{
	const char *env = junction_environment;
	const char *region = junction_region;
	const char *key = junction_api_key ? junction_api_key : "";

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

/* curl write callback: collect the body, refusing absurd sizes. */
static size_t
on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	Transfer   *t = (Transfer *) arg;
	size_t		n = size * nmemb;

	if ((size_t) t->body->len + n > MAX_RESPONSE_BYTES)
	{
		t->too_big = true;
		return 0;
	}
	appendBinaryStringInfo(t->body, data, (int) n);
	return n;
}

/* curl header callback: remember Retry-After. */
static size_t
on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	Transfer   *t = (Transfer *) arg;
	size_t		n = size * nmemb;

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

/* The checks every request passes before anything is sent; returns the key to send. */
static const char *
check_request(bool management, const char *method, const char *path, const char *req_body)
{
	const char *key = management ? junction_management_key : junction_api_key;

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
	if (key == NULL || *key == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("%s is not set", management ? "junction.management_key" : "junction.api_key"),
				 errhint("As a superuser: ALTER SYSTEM SET %s = '...'; SELECT pg_reload_conf();",
						 management ? "junction.management_key" : "junction.api_key")));
	return key;
}

/* The full URL of a request: base, path and query string (palloc'd). */
static char *
request_url(bool management, const char *path, Jsonb *query)
{
	const char *base = management
		? ((junction_management_base_url && *junction_management_base_url)
		   ? junction_management_base_url : "https://api.management.junction.com")
		: data_base_url();
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
 * request, the end of the transaction) abandons it. All of it lives outside any memory context
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

/* A prefetch never outlives its transaction. */
static void
prefetch_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE ||
		event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PARALLEL_COMMIT)
		prefetch_release();
}

/* Start a GET in the background (see Prefetch). */
static void
prefetch_start(bool management, const char *path, Jsonb *query)
{
	const char *key = check_request(management, "GET", path, NULL);
	char	   *url;
	MemoryContext old;
	int			running;
	TimestampTz deadline;

	prefetch_release();
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
	url = request_url(management, path, query);
	old = MemoryContextSwitchTo(TopMemoryContext);
	prefetch.url = pstrdup(url);
	prefetch.key = pstrdup(key);
	initStringInfo(&prefetch.body);
	MemoryContextSwitchTo(old);
	prefetch.management = management;
	memset(&prefetch.t, 0, sizeof(prefetch.t));
	prefetch.t.body = &prefetch.body;
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
 * One request to the Junction data (management=false) or Management API,
 * with retries.  Fills body, returns the final HTTP status.  Transport
 * failures that survive the retries raise an error; HTTP statuses do not.
 */
long
junction_http_request(bool management, const char *method, const char *path,
					  Jsonb *query, const char *req_body, StringInfo body)
{
	const char *key = check_request(management, method, path, req_body);
	bool		idempotent = strcmp(method, "POST") != 0 && strcmp(method, "PATCH") != 0;
	char	   *url;
	char		errbuf[CURL_ERROR_SIZE];
	int			attempt;

	ensure_handle();
	url = request_url(management, path, query);

	for (attempt = 0;; attempt++)
	{
		Transfer	t;
		CURLcode	rc;
		long		status = 0;
		int64		wait_ms;

		memset(&t, 0, sizeof(t));
		t.body = body;
		resetStringInfo(body);

		if (attempt == 0 && prefetch_matches(management, method, url, key))
			rc = prefetch_finish(&t, body, errbuf);
		else
		{
			struct curl_slist *hdrs;

			prefetch_release();	/* another request: the handle is needed */
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
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("junction API %s %s: response larger than %d MB", method, path,
							MAX_RESPONSE_BYTES / (1024 * 1024))));
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
				return status;
			wait_ms = jx_backoff_ms(attempt, jx_parse_retry_after(t.retry_after[0] ? t.retry_after : NULL,
																  time(NULL)),
									pg_prng_double(&pg_global_prng_state));
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
Jsonb *
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
				 errdetail("The response starts with: %.80s", body->data)));
	return res;
}

/* Junction's "detail" text from an error body (or the body's start). */
static char *
error_detail(StringInfo body)
{
	JsonLexContext *lex;
	Jsonb	   *j;
	JsonbValue *v;

	if (body->len == 0)
		return pstrdup("(empty response)");
	lex = makeJsonLexContextCstringLen(body->data, body->len, GetDatabaseEncoding(), false);
	if (pg_parse_json(lex, &nullSemAction) != JSON_SUCCESS)
		return psprintf("%.200s", body->data);
	j = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(body->data)));
	if (JB_ROOT_IS_OBJECT(j) &&
		(v = getKeyJsonValueFromContainer(&j->root, "detail", 6, NULL)) != NULL)
	{
		if (v->type == jbvString)
			return pnstrdup(v->val.string.val, v->val.string.len);
		if (v->type == jbvBinary)
			return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
	}
	return psprintf("%.200s", body->data);
}

/* Raise the SQL error for a non-2xx answer. */
void
junction_raise_http_error(bool management, const char *method, const char *path,
						  long status, StringInfo body)
{
	int			code;
	char	   *detail = error_detail(body);

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
			 errmsg("junction API %s %s failed with HTTP %ld", method, path, status),
			 errdetail("%s", detail),
			 (status == 401 || status == 403)
			 ? errhint("Check %s (a superuser sets it with ALTER SYSTEM SET %s = '...'; SELECT pg_reload_conf();).",
					   management ? "junction.management_key" : "junction.api_key",
					   management ? "junction.management_key" : "junction.api_key")
			 : 0));
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
		junction_raise_http_error(false, method, path, status, &body);
	res = junction_parse_response(method, path, &body);
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
			escape_json(&wrapped, pnstrdup(body.data, Min(body.len, 500)));
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
	PG_RETURN_TEXT_P(cstring_to_text(data_base_url()));
}
