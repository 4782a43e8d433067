/*
 * bench_hmac.c — the anchor for bench_verify.sh: a bare OpenSSL HMAC-SHA256
 * loop (pre-keyed context, dup/update/final, as fast as OpenSSL goes) over the
 * bodies the SQL benchmark verifies, read from a file of one body per line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

int
main(int argc, char **argv)
{
	static const unsigned char key[24] = "0123456789abcdefghijklmn";
	EVP_MAC    *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *keyed = EVP_MAC_CTX_new(mac);
	OSSL_PARAM	p[2] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *) "SHA256", 0),
	OSSL_PARAM_construct_end()};
	FILE	   *fp;
	char	  **bodies = NULL;
	size_t	   *lens = NULL;
	size_t		n = 0,
				cap = 0,
				i;
	char	   *line = NULL;
	size_t		lcap = 0;
	ssize_t		len;
	struct timespec t0,
				t1;
	unsigned char out[32];
	unsigned	sink = 0;
	double		secs;

	if (argc < 2 || (fp = fopen(argv[1], "r")) == NULL)
		return 2;
	while ((len = getline(&line, &lcap, fp)) > 0)
	{
		if (n == cap)
		{
			cap = cap ? cap * 2 : 1024;
			bodies = realloc(bodies, cap * sizeof(char *));
			lens = realloc(lens, cap * sizeof(size_t));
		}
		if (line[len - 1] == '\n')
			len--;
		bodies[n] = malloc((size_t) len);
		memcpy(bodies[n], line, (size_t) len);
		lens[n++] = (size_t) len;
	}
	fclose(fp);
	EVP_MAC_init(keyed, key, sizeof(key), p);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < n; i++)
	{
		EVP_MAC_CTX *c = EVP_MAC_CTX_dup(keyed);
		size_t		ol;

		EVP_MAC_update(c, (const unsigned char *) "msg_0123456789.1760000000.", 26);
		EVP_MAC_update(c, (const unsigned char *) bodies[i], lens[i]);
		EVP_MAC_final(c, out, &ol, sizeof(out));
		sink += out[0];
		EVP_MAC_CTX_free(c);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double) (t1.tv_sec - t0.tv_sec) + (double) (t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("%.0f\n", (double) n / secs);
	return sink == 12345678 ? 1 : 0;
}
