/*
 * signature.c — Svix / Standard Webhooks signature verification.
 *
 * The strict intersection of the official libraries (the rules, and where
 * the libraries differ, are in the README, "Signature verification"):
 * strict padded base64 secrets, strict integer timestamps signed in canonical
 * form, an inclusive tolerance window, only "v1" entries, constant-time
 * comparison of the base64 text.  No Postgres types: this file is also built
 * into the stand-alone ASan/UBSan harness.
 */
#include "signature.h"

#include <string.h>
#include <stdio.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "common/base64.h"

/* The HMAC implementation, fetched once per process and kept. */
static EVP_MAC *hmac_impl = NULL;

/* Fetch (once) OpenSSL's HMAC implementation. */
static EVP_MAC *
get_hmac(void)
{
	if (hmac_impl == NULL)
		hmac_impl = EVP_MAC_fetch(NULL, "HMAC", NULL);
	return hmac_impl;
}

/* Name of a result as the SQL API reports it. */
const char *
jx_sig_result_name(jx_sig_result r)
{
	switch (r)
	{
		case JX_SIG_OK:
			return "ok";
		case JX_SIG_INVALID_SECRET:
			return "invalid_secret";
		case JX_SIG_MISSING_HEADER:
			return "missing_header";
		case JX_SIG_INVALID_TIMESTAMP:
			return "invalid_timestamp";
		case JX_SIG_TOO_OLD:
			return "timestamp_too_old";
		case JX_SIG_TOO_NEW:
			return "timestamp_too_new";
		case JX_SIG_NO_MATCH:
			return "no_matching_signature";
	}
	return "unknown";
}

/* True for the 64 characters of the standard base64 alphabet. */
static int
is_b64_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		(c >= '0' && c <= '9') || c == '+' || c == '/';
}

/*
 * Decode one secret (after an optional "whsec_") into key; returns the key
 * length, or -1 when the text is not strict padded standard base64 or the
 * key is empty.
 */
static int
decode_secret(jx_bytes secret, unsigned char *key, int keycap)
{
	const char *s = secret.data;
	size_t		len = secret.len;
	size_t		i,
				pad = 0;
	int			n;

	if (len >= 6 && memcmp(s, "whsec_", 6) == 0)
	{
		s += 6;
		len -= 6;
	}
	if (len == 0 || len % 4 != 0 || len / 4 * 3 > (size_t) keycap)
		return -1;
	/* Alphabet, then at most two '=' and only at the very end. */
	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '=')
			pad++;
		else if (pad > 0 || !is_b64_char(c))
			return -1;
	}
	if (pad > 2)
		return -1;
	n = pg_b64_decode(s, (int) len, (char *) key, keycap);
	return n > 0 ? n : -1;
}

/* True when one secret (one entry, no spaces) is well formed. */
int
jx_secret_is_valid(jx_bytes secret)
{
	unsigned char key[1024];

	return decode_secret(secret, key, sizeof(key)) > 0;
}

/* Add one secret to a keyset. */
jx_sig_result
jx_keyset_add(jx_keyset *ks, jx_bytes secret)
{
	unsigned char key[1024];
	int			keylen;
	EVP_MAC    *mac;
	EVP_MAC_CTX *ctx;
	OSSL_PARAM	params[2];

	if (ks->nkeys >= JX_MAX_KEYS)
		return JX_SIG_INVALID_SECRET;
	keylen = decode_secret(secret, key, sizeof(key));
	if (keylen <= 0)
		return JX_SIG_INVALID_SECRET;
	mac = get_hmac();
	if (mac == NULL || (ctx = EVP_MAC_CTX_new(mac)) == NULL)
	{
		OPENSSL_cleanse(key, sizeof(key));
		return JX_SIG_INVALID_SECRET;
	}
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *) "SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (EVP_MAC_init(ctx, key, (size_t) keylen, params) != 1)
	{
		EVP_MAC_CTX_free(ctx);
		OPENSSL_cleanse(key, sizeof(key));
		return JX_SIG_INVALID_SECRET;
	}
	OPENSSL_cleanse(key, sizeof(key));
	ks->ctx[ks->nkeys++] = ctx;
	return JX_SIG_OK;
}

/* Parse a space-separated secret list into keyed HMAC contexts. */
jx_sig_result
jx_keyset_parse(jx_keyset *ks, jx_bytes secrets, int *bad_entry)
{
	size_t		i = 0;
	int			entry = 0;

	ks->nkeys = 0;
	if (bad_entry)
		*bad_entry = 0;
	while (i < secrets.len)
	{
		size_t		start;
		jx_bytes	one;

		if (secrets.data[i] == ' ')
		{
			i++;
			continue;
		}
		start = i;
		while (i < secrets.len && secrets.data[i] != ' ')
			i++;
		entry++;
		one.data = secrets.data + start;
		one.len = i - start;
		if (jx_keyset_add(ks, one) != JX_SIG_OK)
		{
			if (bad_entry)
				*bad_entry = entry;
			jx_keyset_free(ks);
			return JX_SIG_INVALID_SECRET;
		}
	}
	return ks->nkeys > 0 ? JX_SIG_OK : JX_SIG_INVALID_SECRET;
}

/* Release the OpenSSL contexts of a keyset. */
void
jx_keyset_free(jx_keyset *ks)
{
	int			i;

	for (i = 0; i < ks->nkeys; i++)
		EVP_MAC_CTX_free((EVP_MAC_CTX *) ks->ctx[i]);
	ks->nkeys = 0;
}

/* Case-insensitive comparison of a header name with a lower-case literal. */
static int
name_is(jx_bytes name, const char *lower)
{
	size_t		n = strlen(lower);
	size_t		i;

	if (name.len != n)
		return 0;
	for (i = 0; i < n; i++)
	{
		char		c = name.data[i];

		if (c >= 'A' && c <= 'Z')
			c = (char) (c - 'A' + 'a');
		if (c != lower[i])
			return 0;
	}
	return 1;
}

/*
 * Note one header into out.  A svix-* header claims its slot even when empty
 * (as svix does: an empty svix-id is missing, not a reason to read webhook-id);
 * webhook-* fills a slot only when no svix-* header is present.
 */
void
jx_pick_header(jx_bytes name, jx_bytes value, jx_sig_headers *out, unsigned *from_svix)
{
	static const char *const svix[3] = {"svix-id", "svix-timestamp", "svix-signature"};
	static const char *const std[3] = {"webhook-id", "webhook-timestamp", "webhook-signature"};
	jx_bytes   *slot[3];
	int			k;

	slot[0] = &out->id;
	slot[1] = &out->timestamp;
	slot[2] = &out->signature;
	if (value.data == NULL)
		return;
	for (k = 0; k < 3; k++)
	{
		if (name_is(name, svix[k]))
		{
			/* first svix-* wins; a later non-empty duplicate replaces an empty one */
			if (!(*from_svix & (1u << k)) || slot[k]->len == 0)
				*slot[k] = value;
			*from_svix |= 1u << k;
			return;
		}
		if (name_is(name, std[k]))
		{
			if (!(*from_svix & (1u << k)) && (slot[k]->data == NULL || slot[k]->len == 0))
				*slot[k] = value;
			return;
		}
	}
}

/* Pick the three signature headers out of (name, value) pairs. */
void
jx_pick_headers(const jx_bytes *names, const jx_bytes *values, int n, jx_sig_headers *out)
{
	unsigned	from_svix = 0;
	int			i;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < n; i++)
		jx_pick_header(names[i], values[i], out, &from_svix);
}

/* Strictly parse "^[+]?[0-9]+$" into an int64; 0 on failure or overflow. */
int
jx_parse_timestamp(jx_bytes ts, int64_t *out)
{
	size_t		i = 0;
	int64_t		v = 0;

	if (ts.len > 0 && ts.data[0] == '+')
		i = 1;
	if (i >= ts.len)
		return 0;
	for (; i < ts.len; i++)
	{
		int			d = ts.data[i] - '0';

		if (d < 0 || d > 9)
			return 0;
		if (v > (INT64_MAX - d) / 10)
			return 0;
		v = v * 10 + d;
	}
	*out = v;
	return 1;
}

/* base64(HMAC(key, id "." ts "." body)) into out (44 chars + NUL); 0 on success. */
static int
compute_sig(void *keyed, jx_bytes id, const char *ts, size_t tslen, jx_bytes body,
			char out[JX_SIG_B64_LEN + 1])
{
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup((EVP_MAC_CTX *) keyed);
	unsigned char mac[32];
	size_t		maclen = 0;
	int			ok;

	if (ctx == NULL)
		return -1;
	ok = EVP_MAC_update(ctx, (const unsigned char *) id.data, id.len) == 1 &&
		EVP_MAC_update(ctx, (const unsigned char *) ".", 1) == 1 &&
		EVP_MAC_update(ctx, (const unsigned char *) ts, tslen) == 1 &&
		EVP_MAC_update(ctx, (const unsigned char *) ".", 1) == 1 &&
		(body.len == 0 ||
		 EVP_MAC_update(ctx, (const unsigned char *) body.data, body.len) == 1) &&
		EVP_MAC_final(ctx, mac, &maclen, sizeof(mac)) == 1 && maclen == 32;
	EVP_MAC_CTX_free(ctx);
	if (!ok)
		return -1;
	if (pg_b64_encode((const char *) mac, 32, out, JX_SIG_B64_LEN + 1) != JX_SIG_B64_LEN)
		return -1;
	out[JX_SIG_B64_LEN] = '\0';
	return 0;
}

/* Verify a delivery against every key of ks. */
jx_sig_result
jx_verify(const jx_keyset *ks, const jx_sig_headers *h, jx_bytes body,
		  int64_t now, int64_t tolerance)
{
	char		expected[JX_MAX_KEYS][JX_SIG_B64_LEN + 1];
	char		tsbuf[24];
	int			tslen;
	int64_t		ts;
	int			k;
	size_t		i;

	if (ks->nkeys <= 0)
		return JX_SIG_INVALID_SECRET;
	if (h->id.data == NULL || h->id.len == 0 ||
		h->timestamp.data == NULL || h->timestamp.len == 0 ||
		h->signature.data == NULL || h->signature.len == 0)
		return JX_SIG_MISSING_HEADER;
	if (!jx_parse_timestamp(h->timestamp, &ts))
		return JX_SIG_INVALID_TIMESTAMP;
	/* ts >= 0 and now may be negative: compare without overflow */
	if (now > ts && (uint64_t) now - (uint64_t) ts > (uint64_t) tolerance)
		return JX_SIG_TOO_OLD;
	if (ts > now && (uint64_t) ts - (uint64_t) now > (uint64_t) tolerance)
		return JX_SIG_TOO_NEW;

	tslen = snprintf(tsbuf, sizeof(tsbuf), "%lld", (long long) ts);
	for (k = 0; k < ks->nkeys; k++)
		if (compute_sig(ks->ctx[k], h->id, tsbuf, (size_t) tslen, body, expected[k]) != 0)
			return JX_SIG_NO_MATCH;

	/* Entries: split on single spaces, skip empty ones, version before the first comma. */
	i = 0;
	while (i < h->signature.len)
	{
		const char *e;
		size_t		start,
					elen;

		if (h->signature.data[i] == ' ')
		{
			i++;
			continue;
		}
		start = i;
		while (i < h->signature.len && h->signature.data[i] != ' ')
			i++;
		e = h->signature.data + start;
		elen = i - start;
		if (elen == 3 + JX_SIG_B64_LEN && memcmp(e, "v1,", 3) == 0)
		{
			for (k = 0; k < ks->nkeys; k++)
				if (CRYPTO_memcmp(e + 3, expected[k], JX_SIG_B64_LEN) == 0)
					return JX_SIG_OK;
		}
	}
	return JX_SIG_NO_MATCH;
}

/* The signature header value for the first key of ks. */
int
jx_sign(const jx_keyset *ks, jx_bytes id, int64_t timestamp, jx_bytes body,
		char out[JX_SIG_B64_LEN + 4])
{
	char		tsbuf[24];
	int			tslen;

	if (ks->nkeys <= 0)
		return -1;
	tslen = snprintf(tsbuf, sizeof(tsbuf), "%lld", (long long) timestamp);
	memcpy(out, "v1,", 3);
	return compute_sig(ks->ctx[0], id, tsbuf, (size_t) tslen, body, out + 3);
}
