/*
 * backoff.h — retry decisions for the HTTP client, pure C (no Postgres types)
 * so the sanitizer harness can test them.
 */
#ifndef JUNCTION_BACKOFF_H
#define JUNCTION_BACKOFF_H

#include <stdint.h>
#include <time.h>

/* Longest Retry-After we honour; longer ones fall back to exponential backoff. */
#define JX_RETRY_AFTER_MAX_MS 30000
/* Exponential backoff: 500 ms * 2^attempt, capped. */
#define JX_BACKOFF_BASE_MS 500
#define JX_BACKOFF_CAP_MS 10000

/* True for the HTTP statuses worth retrying: 408, 429, 500, 502, 503, 504. */
extern int	jx_status_is_retryable(long status);

/*
 * Parse a Retry-After value: delta-seconds ("120") or an IMF-fixdate
 * ("Wed, 21 Oct 2015 07:28:00 GMT") relative to now.  Returns milliseconds
 * (>= 0), or -1 when the value is absent or malformed.
 */
extern int64_t jx_parse_retry_after(const char *value, time_t now);

/*
 * Milliseconds to wait before retry number attempt (0-based): Retry-After
 * when given and at most JX_RETRY_AFTER_MAX_MS, else exponential backoff with
 * "equal jitter" (half fixed, half random); rnd is a uniform value in [0, 1).
 */
extern int64_t jx_backoff_ms(int attempt, int64_t retry_after_ms, double rnd);

#endif							/* JUNCTION_BACKOFF_H */
