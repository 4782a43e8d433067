/*
 * signature.h — Svix / Standard Webhooks signature verification, pure C.
 *
 * No Postgres types here: the same code runs inside the server and in the
 * stand-alone sanitizer harness (test/sigtest.c).  HMAC comes from OpenSSL,
 * base64 from Postgres' libpgcommon.
 */
#ifndef JUNCTION_SIGNATURE_H
#define JUNCTION_SIGNATURE_H

#include <stddef.h>
#include <stdint.h>

/* A byte string that is not NUL-terminated; data == NULL means absent. */
typedef struct jx_bytes
{
	const char *data;
	size_t		len;
} jx_bytes;

/* Outcomes, in the order the official libraries check them. */
typedef enum jx_sig_result
{
	JX_SIG_OK = 0,
	JX_SIG_INVALID_SECRET,
	JX_SIG_MISSING_HEADER,
	JX_SIG_INVALID_TIMESTAMP,
	JX_SIG_TOO_OLD,
	JX_SIG_TOO_NEW,
	JX_SIG_NO_MATCH
} jx_sig_result;

/* Most secrets tried at once (rotation lists, webhook_secrets rows). */
#define JX_MAX_KEYS 64
/* Length of base64(HMAC-SHA256): 32 bytes -> 44 characters. */
#define JX_SIG_B64_LEN 44

/* A set of decoded signing keys, each held as a keyed HMAC context. */
typedef struct jx_keyset
{
	int			nkeys;
	void	   *ctx[JX_MAX_KEYS];	/* EVP_MAC_CTX *, keyed */
} jx_keyset;

/* The three signature headers picked out of a delivery. */
typedef struct jx_sig_headers
{
	jx_bytes	id;
	jx_bytes	timestamp;
	jx_bytes	signature;
} jx_sig_headers;

/* Name of a result as the SQL API reports it ("ok", "missing_header", ...). */
extern const char *jx_sig_result_name(jx_sig_result r);

/*
 * Parse a space-separated list of secrets (each optionally "whsec_"-prefixed,
 * strict padded base64) into keyed HMAC contexts.  Returns JX_SIG_OK or
 * JX_SIG_INVALID_SECRET (then ks holds nothing).  *bad_entry, if not NULL,
 * receives the 1-based index of the first bad entry (0 if the list is empty).
 */
extern jx_sig_result jx_keyset_parse(jx_keyset *ks, jx_bytes secrets, int *bad_entry);

/* Add one secret to a keyset; JX_SIG_INVALID_SECRET if it is malformed or the set is full. */
extern jx_sig_result jx_keyset_add(jx_keyset *ks, jx_bytes secret);

/* Release the OpenSSL contexts of a keyset. */
extern void jx_keyset_free(jx_keyset *ks);

/* True when one secret (one entry, no spaces) is well formed. */
extern int	jx_secret_is_valid(jx_bytes secret);

/*
 * Pick svix-id/-timestamp/-signature out of header (name, value) pairs:
 * names match case-insensitively, svix-* wins per header over webhook-*,
 * and an empty value counts as absent.
 */
extern void jx_pick_headers(const jx_bytes *names, const jx_bytes *values, int n,
							jx_sig_headers *out);

/* Note one header (name, value) into out, honouring the svix-over-webhook rule. */
extern void jx_pick_header(jx_bytes name, jx_bytes value, jx_sig_headers *out,
						   unsigned *from_svix);

/*
 * Verify a delivery.  now and tolerance are integer seconds; the window is
 * inclusive at both ends.  The HMAC covers id "." canonical-timestamp "." body.
 */
extern jx_sig_result jx_verify(const jx_keyset *ks, const jx_sig_headers *h,
							   jx_bytes body, int64_t now, int64_t tolerance);

/* Strictly parse a timestamp header ("^[+]?[0-9]+$" within int64); 0 on failure. */
extern int	jx_parse_timestamp(jx_bytes ts, int64_t *out);

/*
 * Write "v1," + base64(HMAC) (47 chars + NUL) for the first key of ks into out.
 * Returns 0 on success.
 */
extern int	jx_sign(const jx_keyset *ks, jx_bytes id, int64_t timestamp, jx_bytes body,
					char out[JX_SIG_B64_LEN + 4]);

#endif							/* JUNCTION_SIGNATURE_H */
