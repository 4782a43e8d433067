/*
 * sigtest.c — runs the Svix vectors (test/svix-vectors/vectors.tsv, made by
 * gen.js with the real svix package) and a few unit checks through the pure-C
 * signature core, under AddressSanitizer and UndefinedBehaviorSanitizer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "signature.h"

static int	failures = 0;
static int	checks = 0;

/* Count one check; print it when it fails. */
static void
check(int ok, const char *what, const char *detail)
{
	checks++;
	if (!ok)
	{
		failures++;
		printf("FAIL %s: %s\n", what, detail);
	}
}

/* Decode hex text into a fresh malloc'd buffer; returns length or -1. */
static long
unhex(const char *s, size_t n, char **out)
{
	char	   *b = malloc(n / 2 + 1);
	size_t		i;

	if (n % 2)
	{
		free(b);
		return -1;
	}
	for (i = 0; i < n / 2; i++)
	{
		unsigned	v;

		if (sscanf(s + 2 * i, "%2x", &v) != 1)
		{
			free(b);
			return -1;
		}
		b[i] = (char) v;
	}
	*out = b;
	return (long) (n / 2);
}

/* Split line into at most max tab-separated fields (in place). */
static int
split_tabs(char *line, char **f, int max)
{
	int			n = 0;

	f[n++] = line;
	while (n < max && (line = strchr(line, '\t')) != NULL)
	{
		*line++ = '\0';
		f[n++] = line;
	}
	return n;
}

/* Build the body from "hex:<hex>" or "repeat:<hex>:<count>". */
static long
make_body(const char *spec, char **out)
{
	if (strncmp(spec, "hex:", 4) == 0)
		return unhex(spec + 4, strlen(spec + 4), out);
	if (strncmp(spec, "repeat:", 7) == 0)
	{
		const char *colon = strrchr(spec, ':');
		char	   *chunk;
		long		clen = unhex(spec + 7, (size_t) (colon - spec - 7), &chunk);
		long		count = atol(colon + 1);
		char	   *b;
		long		i;

		if (clen < 0 || count < 0)
			return -1;
		b = malloc((size_t) (clen * count) + 1);
		for (i = 0; i < count; i++)
			memcpy(b + i * clen, chunk, (size_t) clen);
		free(chunk);
		*out = b;
		return clen * count;
	}
	return -1;
}

/* One vector line: name, expected, secret_hex, headers, body, at, tolerance. */
static void
run_vector(char *line)
{
	char	   *f[8];
	char	   *secret = NULL,
			   *body = NULL;
	long		slen,
				blen;
	jx_bytes	names[16],
				values[16];
	char	   *bufs[32];
	int			nh = 0,
				nb = 0,
				i;
	jx_keyset	ks;
	jx_sig_headers h;
	jx_sig_result r;
	char		detail[256];

	if (split_tabs(line, f, 7) != 7)
	{
		check(0, "vector line", "wrong number of fields");
		return;
	}
	slen = unhex(f[2], strlen(f[2]), &secret);
	blen = make_body(f[4], &body);
	if (slen < 0 || blen < 0)
	{
		check(0, f[0], "bad hex");
		free(secret);
		free(body);
		return;
	}
	/* headers: namehex:valuehex,namehex:valuehex */
	if (f[3][0] != '\0')
	{
		char	   *p = f[3];

		while (p && *p && nh < 16)
		{
			char	   *comma = strchr(p, ',');
			char	   *colon = strchr(p, ':');
			size_t		plen = comma ? (size_t) (comma - p) : strlen(p);
			long		nl,
						vl;

			if (!colon || colon > p + plen)
				break;
			nl = unhex(p, (size_t) (colon - p), &bufs[nb]);
			names[nh].data = bufs[nb++];
			names[nh].len = (size_t) nl;
			vl = unhex(colon + 1, plen - (size_t) (colon - p) - 1, &bufs[nb]);
			values[nh].data = bufs[nb++];
			values[nh].len = (size_t) vl;
			nh++;
			p = comma ? comma + 1 : NULL;
		}
	}
	{
		jx_bytes	s = {secret, (size_t) slen};
		jx_bytes	b = {body, (size_t) blen};

		r = jx_keyset_parse(&ks, s, NULL);
		if (r == JX_SIG_OK)
		{
			jx_pick_headers(names, values, nh, &h);
			r = jx_verify(&ks, &h, b, atoll(f[5]), atoll(f[6]));
			jx_keyset_free(&ks);
		}
	}
	snprintf(detail, sizeof(detail), "expected %s, got %s", f[1], jx_sig_result_name(r));
	check(strcmp(f[1], jx_sig_result_name(r)) == 0, f[0], detail);
	for (i = 0; i < nb; i++)
		free(bufs[i]);
	free(secret);
	free(body);
}

/* Unit checks independent of the vector file. */
static void
unit_checks(void)
{
	jx_keyset	ks;
	char		out[JX_SIG_B64_LEN + 4];
	int64_t		v;
	static const char *secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
	static const char *id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
	static const char *body = "{\"test\": 2432232314}";
	jx_bytes	s = {secret, strlen(secret)};
	jx_bytes	i = {id, strlen(id)};
	jx_bytes	b = {body, strlen(body)};

	check(jx_keyset_parse(&ks, s, NULL) == JX_SIG_OK, "official secret parses", "");
	check(jx_sign(&ks, i, 1614265330, b, out) == 0 &&
		  strcmp(out, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=") == 0,
		  "official vector signs", out);
	jx_keyset_free(&ks);

	check(jx_parse_timestamp((jx_bytes) {"+0012", 5}, &v) && v == 12, "timestamp +0012", "");
	check(!jx_parse_timestamp((jx_bytes) {"+", 1}, &v), "timestamp +", "");
	check(!jx_parse_timestamp((jx_bytes) {"9223372036854775808", 19}, &v), "timestamp overflow", "");
	check(jx_parse_timestamp((jx_bytes) {"9223372036854775807", 19}, &v) && v == INT64_MAX,
		  "timestamp max", "");
	check(!jx_parse_timestamp((jx_bytes) {"-1", 2}, &v), "timestamp -1", "");
	check(!jx_secret_is_valid((jx_bytes) {"whsec_", 6}), "whsec_ alone invalid", "");
	check(!jx_secret_is_valid((jx_bytes) {"whsec_YQ", 8}), "unpadded invalid", "");
	check(jx_secret_is_valid((jx_bytes) {"YQ==", 4}), "padded bare valid", "");
	check(!jx_secret_is_valid((jx_bytes) {"Y=Q=", 4}), "inner padding invalid", "");
	check(!jx_secret_is_valid((jx_bytes) {"YQ-_", 4}), "base64url invalid", "");
	/* a far-past 'now' against a huge timestamp must not overflow */
	{
		jx_sig_headers h = {{"a", 1}, {"9223372036854775807", 19}, {"v1,x", 4}};

		check(jx_keyset_parse(&ks, s, NULL) == JX_SIG_OK &&
			  jx_verify(&ks, &h, b, INT64_MIN / 2, 300) == JX_SIG_TOO_NEW,
			  "no overflow on extreme timestamps", "");
		jx_keyset_free(&ks);
	}
}

int
main(int argc, char **argv)
{
	FILE	   *fp;
	char	   *line = NULL;
	size_t		cap = 0;
	ssize_t		len;
	int			vectors = 0;

	unit_checks();
	if (argc < 2 || (fp = fopen(argv[1], "r")) == NULL)
	{
		printf("usage: sigtest vectors.tsv (could not open)\n");
		return 2;
	}
	while ((len = getline(&line, &cap, fp)) > 0)
	{
		if (line[len - 1] == '\n')
			line[--len] = '\0';
		if (len == 0)
			continue;
		run_vector(line);
		vectors++;
	}
	free(line);
	fclose(fp);
	printf("sigtest: %d vectors, %d checks, %d failed\n", vectors, checks, failures);
	return failures == 0 && vectors > 0 ? 0 : 1;
}
