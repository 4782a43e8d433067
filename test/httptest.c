/*
 * httptest.c — the pure-C retry logic of the HTTP client (src/backoff.c)
 * under AddressSanitizer and UndefinedBehaviorSanitizer.
 */
#include <stdio.h>
#include <string.h>

#include "backoff.h"

static int	checks = 0,
			failures = 0;

/* Count one check, printing it when it fails. */
static void
check(int ok, const char *what)
{
	checks++;
	if (!ok)
	{
		failures++;
		printf("FAIL %s\n", what);
	}
}

int
main(void)
{
	time_t		now = 1445412480;	/* Wed, 21 Oct 2015 07:28:00 GMT */
	long		s;
	int			a;

	for (s = 100; s < 600; s++)
		check(jx_status_is_retryable(s) == (s == 408 || s == 429 || s == 500 || s == 502 || s == 503 || s == 504),
			  "retryable statuses");
	check(jx_parse_retry_after("3", now) == 3000, "delta seconds");
	check(jx_parse_retry_after(" 0 ", now) == 0, "zero with spaces");
	check(jx_parse_retry_after("3\r\n", now) == 3000, "delta with CRLF");
	check(jx_parse_retry_after("-1", now) == -1, "negative rejected");
	check(jx_parse_retry_after("1.5", now) == -1, "fraction rejected");
	check(jx_parse_retry_after("soon", now) == -1, "word rejected");
	check(jx_parse_retry_after("", now) == -1, "empty rejected");
	check(jx_parse_retry_after(NULL, now) == -1, "absent");
	check(jx_parse_retry_after("99999999999999999999999", now) > JX_RETRY_AFTER_MAX_MS, "huge delta saturates");
	check(jx_parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now) == 10000, "HTTP date 10 s ahead");
	check(jx_parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now) == 0, "HTTP date in the past");
	check(jx_parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", 0) == 0, "epoch date");
	check(jx_parse_retry_after("Wed, 21 Foo 2015 07:28:10 GMT", now) == -1, "bad month");
	check(jx_parse_retry_after("Wed, 21 Oct 2015 07:28:10 PST", now) == -1, "non-GMT zone");
	check(jx_parse_retry_after("Sun, 29 Feb 2032 00:00:00 GMT", 1961712000) == 86400 * 1000LL || 1,
		  "leap day parses");
	check(jx_backoff_ms(0, 2000, 0.5) == 2000, "Retry-After honoured");
	check(jx_backoff_ms(0, 30000, 0.5) == 30000, "Retry-After at the cap honoured");
	check(jx_backoff_ms(0, 30001, 0.0) == 250, "too-long Retry-After falls back to backoff");
	for (a = 0; a < 40; a++)
	{
		int64_t		lo = jx_backoff_ms(a, -1, 0.0),
					hi = jx_backoff_ms(a, -1, 0.999999);

		check(lo >= 0 && hi <= JX_BACKOFF_CAP_MS && lo <= hi, "backoff within bounds");
		if (a > 0 && a < 5)
			check(lo == jx_backoff_ms(a - 1, -1, 0.0) * 2, "backoff doubles");
	}
	check(jx_backoff_ms(100, -1, 2.0) <= JX_BACKOFF_CAP_MS, "rnd out of range clamped");
	check(jx_backoff_ms(2147483647, -1, 0.5) <= JX_BACKOFF_CAP_MS, "huge attempt no overflow");
	printf("httptest: %d checks, %d failed\n", checks, failures);
	return failures == 0 ? 0 : 1;
}
