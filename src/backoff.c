/*
 * backoff.c — which HTTP answers to retry, and how long to wait first.
 */
#include "backoff.h"

#include <ctype.h>
#include <string.h>
#include <stdio.h>

/* True for the HTTP statuses worth retrying. */
int
jx_status_is_retryable(long status)
{
	return status == 408 || status == 429 || status == 500 ||
		status == 502 || status == 503 || status == 504;
}

/* Days from 1970-01-01 to the given civil date (proleptic Gregorian). */
static int64_t
days_from_civil(int64_t y, int m, int d)
{
	int64_t		era,
				yoe,
				doy,
				doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/* Parse Retry-After: delta-seconds or an IMF-fixdate; -1 if malformed. */
int64_t
jx_parse_retry_after(const char *value, time_t now)
{
	static const char *const months[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	const char *p;
	int64_t		secs = 0;
	char		wday[4],
				mon[4],
				zone[4];
	int			day,
				year,
				hh,
				mm,
				ss,
				m,
				consumed = 0;

	if (value == NULL)
		return -1;
	while (*value == ' ' || *value == '\t')
		value++;
	if (isdigit((unsigned char) *value))
	{
		for (p = value; isdigit((unsigned char) *p); p++)
		{
			if (secs > 100000000)	/* absurdly long: treat as "too long" */
				return INT64_MAX / 2;
			secs = secs * 10 + (*p - '0');
		}
		while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
			p++;
		return *p == '\0' ? secs * 1000 : -1;
	}
	if (sscanf(value, "%3s, %2d %3s %4d %2d:%2d:%2d %3s%n",
			   wday, &day, mon, &year, &hh, &mm, &ss, zone, &consumed) != 8 ||
		strcmp(zone, "GMT") != 0)
		return -1;
	for (m = 0; m < 12; m++)
		if (strcmp(mon, months[m]) == 0)
			break;
	if (m == 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
		return -1;
	secs = days_from_civil(year, m + 1, day) * 86400 + hh * 3600 + mm * 60 + ss;
	secs -= (int64_t) now;
	return secs > 0 ? secs * 1000 : 0;
}

/* Wait before retry number attempt: Retry-After if short enough, else backoff. */
int64_t
jx_backoff_ms(int attempt, int64_t retry_after_ms, double rnd)
{
	int64_t		exp = JX_BACKOFF_BASE_MS;
	int			i;

	if (retry_after_ms >= 0 && retry_after_ms <= JX_RETRY_AFTER_MAX_MS)
		return retry_after_ms;
	for (i = 0; i < attempt && exp < JX_BACKOFF_CAP_MS; i++)
		exp *= 2;
	if (exp > JX_BACKOFF_CAP_MS)
		exp = JX_BACKOFF_CAP_MS;
	if (rnd < 0)
		rnd = 0;
	if (rnd >= 1)
		rnd = 0.999999;
	return exp / 2 + (int64_t) ((double) (exp / 2) * rnd);
}
