/*
 * passwd.c - the password file: loading, verification, hashing, editing.
 *
 * Design
 * ------
 * A loaded db is an array of entries plus an open-addressing index keyed by
 * the user name bytes. After loading nothing in it changes except the
 * per-user verification cache, which a single mutex protects; everything
 * else is read without locks from any number of threads.
 *
 * Verification cost. PBKDF2 with the entry's own iteration count is the slow
 * path. A name that is not in the file is verified against a dummy entry
 * (random salt and key, the most common iteration count of the file), and
 * the cache MAC is computed on every call whatever the outcome, so an
 * unknown user takes as long as a wrong password and the caller cannot
 * probe for names. Every derivation passwd_db_check does is counted
 * (passwd_pbkdf2_runs/_iterations), so tests check these costs exactly
 * instead of timing them.
 *
 * Verification cache. After a successful PBKDF2 check the entry keeps
 * HMAC-SHA256(secret, salt || password), with a secret drawn from the random
 * source when the db is loaded. A later check computes the same MAC and, if
 * it matches, succeeds without PBKDF2. A mismatch falls through to the slow
 * path, so the cache never makes guessing cheaper. The cache is one 32-byte
 * slot per user, so its size is bounded by the file; a reload makes a new db
 * and with it an empty cache, which is how a changed password invalidates it.
 *
 * Editing (passwd_file_set/delete) works on the raw lines so that comments,
 * blank lines and even malformed lines of other users survive unchanged.
 * The new content goes to a temporary file in the same directory which is
 * then renamed over the old one, so a reader sees the old or the new file,
 * never a half-written one.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "auth/auth.h"

#define HASH_PREFIX  "$pbkdf2-sha512$"
#define SALT_LEN     16
#define DK_LEN       64
#define MAC_LEN      32
#define SALT_B64_LEN 24 /* 4 * ceil(16 / 3) */
#define DK_B64_LEN   88 /* 4 * ceil(64 / 3) */
#define ITER_MIN     1000u
#define ITER_MAX     10000000u
#define USER_MAX     65535u
#define FILE_MAX     (64u << 20) /* refuse absurd files instead of exhausting memory */

struct pw_entry {
	uint8_t *user; /* owned, not NUL-terminated */
	size_t ulen;
	unsigned iterations;
	uint8_t salt[SALT_LEN];
	uint8_t dk[DK_LEN];
	bool cached;          /* guarded by passwd_db.lock */
	uint8_t mac[MAC_LEN]; /* guarded by passwd_db.lock */
};

struct passwd_db {
	struct pw_entry *entries; /* owned */
	size_t n, cap;
	uint32_t *slots; /* owned; entry index + 1, 0 = empty; size is a power of two */
	size_t nslots;
	struct pw_entry dummy; /* stands in for unknown users; never cached */
	uint8_t secret[MAC_LEN];
	EVP_MAC *hmac; /* owned; fetched once, shared by all threads */
	pthread_mutex_t lock;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---------------------------------------------------------------- helpers */

/*
 * Why a user name is unusable, or NULL if it is fine. The rules keep every
 * name representable as one "name:hash" line.
 */
static const char *user_name_problem(const uint8_t *u, size_t len)
{
	if (len == 0)
		return "empty user name";
	if (len > USER_MAX)
		return "user name longer than 65535 bytes";
	for (size_t i = 0; i < len; i++) {
		if (u[i] == ':')
			return "user name contains ':'";
		if (u[i] < 0x20 || u[i] == 0x7f)
			return "user name contains a control character";
	}
	return NULL;
}

/* A line the loader skips: empty, blanks only, or '#' as first non-blank. */
static bool line_is_ignored(const char *s, size_t len)
{
	size_t i = 0;

	while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r'))
		i++;
	return i == len || s[i] == '#';
}

/*
 * Reads a whole file. On success *buf (owned by the caller, NUL-terminated
 * for convenience) and *len are set. Returns 0, or -1 with errno set.
 */
static int read_file(const char *path, char **buf, size_t *len)
{
	FILE *f = NULL;
	char *b = NULL;
	size_t n = 0, cap = 0;

	f = fopen(path, "rb");
	if (!f)
		goto fail;
	for (;;) {
		if (cap - n < 4096) {
			char *nb;

			if (cap >= FILE_MAX) {
				errno = EFBIG;
				goto fail;
			}
			cap = cap ? cap * 2 : 8192;
			nb = realloc(b, cap + 1);
			if (!nb)
				goto fail;
			b = nb;
		}
		size_t got = fread(b + n, 1, cap - n, f);
		n += got;
		if (got == 0) {
			if (ferror(f)) {
				errno = EIO;
				goto fail;
			}
			break;
		}
	}
	fclose(f);
	if (!b) {
		b = malloc(1);
		if (!b)
			return -1;
	}
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
fail:
	if (f) {
		int e = errno;
		fclose(f);
		errno = e;
	}
	free(b);
	return -1;
}

static uint64_t name_hash(const uint8_t *p, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

/* Slot holding `user`, or the empty slot where it would go. */
static size_t find_slot(const passwd_db *db, const uint8_t *user, size_t ulen)
{
	size_t mask = db->nslots - 1;
	size_t i = (size_t)name_hash(user, ulen) & mask;

	for (;;) {
		uint32_t s = db->slots[i];
		if (s == 0)
			return i;
		const struct pw_entry *e = &db->entries[s - 1];
		if (e->ulen == ulen && memcmp(e->user, user, ulen) == 0)
			return i;
		i = (i + 1) & mask;
	}
}

static const struct pw_entry *lookup(const passwd_db *db, const uint8_t *user, size_t ulen)
{
	if (db->nslots == 0)
		return NULL;
	uint32_t s = db->slots[find_slot(db, user, ulen)];
	return s ? &db->entries[s - 1] : NULL;
}

/* Keeps the index at most half full. Returns 0, or -1 on allocation failure. */
static int index_grow(passwd_db *db)
{
	size_t nslots = db->nslots ? db->nslots * 2 : 16;
	uint32_t *old = db->slots;

	db->slots = calloc(nslots, sizeof(*db->slots));
	if (!db->slots) {
		db->slots = old;
		return -1;
	}
	db->nslots = nslots;
	for (size_t k = 0; k < db->n; k++) {
		const struct pw_entry *e = &db->entries[k];
		db->slots[find_slot(db, e->user, e->ulen)] = (uint32_t)(k + 1);
	}
	free(old);
	return 0;
}

/*
 * Decodes exactly `want` bytes from base64 text of the canonical length
 * (with '=' padding). Stricter than EVP_DecodeBlock alone, which would skip
 * blanks and ignore what follows the data.
 */
static int b64_decode_exact(const char *s, size_t len, uint8_t *out, size_t want)
{
	uint8_t tmp[DK_LEN + 3];
	size_t enc = 4 * ((want + 2) / 3);
	size_t pad = (3 - want % 3) % 3;

	if (len != enc || enc / 4 * 3 > sizeof(tmp))
		return -1;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		bool alpha = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		             (c >= '0' && c <= '9') || c == '+' || c == '/';
		if (i >= len - pad) {
			if (c != '=')
				return -1;
		} else if (!alpha) {
			return -1;
		}
	}
	if (EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)len) != (int)(enc / 4 * 3))
		return -1;
	memcpy(out, tmp, want);
	return 0;
}

/*
 * Parses "$pbkdf2-sha512$<iterations>$<salt>$<dk>" into e. Returns 0, or -1
 * with *why set to a message.
 */
static int parse_hash(const char *s, size_t len, struct pw_entry *e, const char **why)
{
	size_t plen = strlen(HASH_PREFIX);
	const char *p, *end = s + len, *d;
	unsigned long iter = 0;

	*why = "bad hash (expected $pbkdf2-sha512$<iterations>$<salt>$<key>)";
	if (len < plen || memcmp(s, HASH_PREFIX, plen) != 0)
		return -1;
	p = s + plen;
	d = memchr(p, '$', (size_t)(end - p));
	if (!d || d == p || d - p > 9)
		return -1;
	for (const char *q = p; q < d; q++) {
		if (*q < '0' || *q > '9')
			return -1;
		iter = iter * 10 + (unsigned long)(*q - '0');
	}
	if (iter < ITER_MIN || iter > ITER_MAX) {
		*why = "iteration count outside 1000..10000000";
		return -1;
	}
	p = d + 1;
	d = memchr(p, '$', (size_t)(end - p));
	if (!d)
		return -1;
	if (b64_decode_exact(p, (size_t)(d - p), e->salt, SALT_LEN) != 0) {
		*why = "bad hash salt (expected 16 bytes of base64)";
		return -1;
	}
	p = d + 1;
	if (b64_decode_exact(p, (size_t)(end - p), e->dk, DK_LEN) != 0) {
		*why = "bad hash key (expected 64 bytes of base64)";
		return -1;
	}
	e->iterations = (unsigned)iter;
	return 0;
}

static int cmp_unsigned(const void *a, const void *b)
{
	unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
	return (x > y) - (x < y);
}

/*
 * The iteration count an unknown user is verified with: the most common one
 * in the file, so the typical wrong password and an unknown name cost the
 * same. Returns 0, or -1 on allocation failure.
 */
static int dummy_iterations(const passwd_db *db, unsigned *out)
{
	unsigned *v;
	unsigned best = PASSWD_DEFAULT_ITERATIONS;
	size_t best_run = 0;

	if (db->n == 0) {
		*out = best;
		return 0;
	}
	v = malloc(db->n * sizeof(*v));
	if (!v)
		return -1;
	for (size_t i = 0; i < db->n; i++)
		v[i] = db->entries[i].iterations;
	qsort(v, db->n, sizeof(*v), cmp_unsigned);
	for (size_t i = 0; i < db->n;) {
		size_t j = i;
		while (j < db->n && v[j] == v[i])
			j++;
		if (j - i >= best_run) { /* ties go to the larger (later) count */
			best_run = j - i;
			best = v[i];
		}
		i = j;
	}
	free(v);
	*out = best;
	return 0;
}

/* ---------------------------------------------------------------- loading */

/* Parses one non-ignored line into a new entry. Returns 0, or -1 with *why. */
static int add_line(passwd_db *db, const char *line, size_t len, const char **why)
{
	const char *colon = memchr(line, ':', len);
	const uint8_t *user = (const uint8_t *)line;
	struct pw_entry e = {0};
	size_t hlen;

	if (!colon) {
		*why = "expected user:hash";
		return -1;
	}
	e.ulen = (size_t)(colon - line);
	*why = user_name_problem(user, e.ulen);
	if (*why)
		return -1;
	hlen = len - e.ulen - 1;
	/* Trailing blanks after the hash are editing noise, not part of it. */
	while (hlen > 0 && (colon[hlen] == ' ' || colon[hlen] == '\t' || colon[hlen] == '\r'))
		hlen--;
	if (parse_hash(colon + 1, hlen, &e, why) != 0)
		return -1;
	if (lookup(db, user, e.ulen)) {
		*why = "duplicate user";
		return -1;
	}
	*why = "out of memory";
	if (db->n + 1 > db->nslots / 2 && index_grow(db) != 0)
		return -1;
	if (db->n == db->cap) {
		size_t cap = db->cap ? db->cap * 2 : 16;
		struct pw_entry *ne = realloc(db->entries, cap * sizeof(*ne));
		if (!ne)
			return -1;
		db->entries = ne;
		db->cap = cap;
	}
	e.user = malloc(e.ulen);
	if (!e.user)
		return -1;
	memcpy(e.user, user, e.ulen);
	db->entries[db->n] = e;
	db->slots[find_slot(db, e.user, e.ulen)] = (uint32_t)(db->n + 1);
	db->n++;
	return 0;
}

int passwd_db_load(const char *path, passwd_db **out, char *err, size_t errlen)
{
	passwd_db *db = NULL;
	char *buf = NULL;
	size_t len = 0, lineno = 0;

	*out = NULL;
	if (read_file(path, &buf, &len) != 0) {
		set_err(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	db = calloc(1, sizeof(*db));
	if (!db || pthread_mutex_init(&db->lock, NULL) != 0) {
		/* A db without its mutex cannot go through passwd_db_free. */
		free(db);
		db = NULL;
		set_err(err, errlen, "%s: out of memory", path);
		goto fail;
	}
	for (size_t pos = 0; pos < len;) {
		const char *line = buf + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t ll = nl ? (size_t)(nl - line) : len - pos;
		const char *why;

		pos += ll + (nl ? 1 : 0);
		lineno++;
		if (line_is_ignored(line, ll))
			continue;
		if (add_line(db, line, ll, &why) != 0) {
			set_err(err, errlen, "%s:%zu: %s", path, lineno, why);
			goto fail;
		}
	}
	if (dummy_iterations(db, &db->dummy.iterations) != 0) {
		set_err(err, errlen, "%s: out of memory", path);
		goto fail;
	}
	/* A random key no password derives to (with overwhelming probability);
	 * the check also refuses the dummy explicitly. */
	if (RAND_bytes(db->dummy.salt, SALT_LEN) != 1 || RAND_bytes(db->dummy.dk, DK_LEN) != 1 ||
	    RAND_bytes(db->secret, MAC_LEN) != 1) {
		set_err(err, errlen, "%s: random source failed", path);
		goto fail;
	}
	db->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!db->hmac) {
		set_err(err, errlen, "%s: OpenSSL has no HMAC", path);
		goto fail;
	}
	free(buf);
	*out = db;
	return 0;
fail:
	free(buf);
	passwd_db_free(&db);
	return -1;
}

void passwd_db_free(passwd_db **dbp)
{
	passwd_db *db = dbp ? *dbp : NULL;

	if (!db)
		return;
	for (size_t i = 0; i < db->n; i++) {
		OPENSSL_cleanse(db->entries[i].mac, MAC_LEN);
		free(db->entries[i].user);
	}
	free(db->entries);
	free(db->slots);
	EVP_MAC_free(db->hmac);
	OPENSSL_cleanse(db->secret, MAC_LEN);
	pthread_mutex_destroy(&db->lock);
	free(db);
	*dbp = NULL;
}

size_t passwd_db_count(const passwd_db *db)
{
	return db ? db->n : 0;
}

/* ---------------------------------------------------------------- checking */

/* Work done by passwd_db_check's slow path (see auth.h). Relaxed: they are
 * counters, nothing is ordered by them. */
static _Atomic uint64_t pbkdf2_runs, pbkdf2_iterations;

uint64_t passwd_pbkdf2_runs(void)
{
	return atomic_load_explicit(&pbkdf2_runs, memory_order_relaxed);
}

uint64_t passwd_pbkdf2_iterations(void)
{
	return atomic_load_explicit(&pbkdf2_iterations, memory_order_relaxed);
}

/* HMAC-SHA256(db secret, salt || pw) into mac. Returns 0, or -1. */
static int cache_mac(passwd_db *db, const uint8_t *salt, const uint8_t *pw, size_t pwlen,
                     uint8_t mac[MAC_LEN])
{
	EVP_MAC_CTX *ctx = NULL;
	OSSL_PARAM params[2];
	size_t outl = 0;
	int rc = -1;

	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	ctx = EVP_MAC_CTX_new(db->hmac);
	if (!ctx)
		goto fail;
	if (EVP_MAC_init(ctx, db->secret, MAC_LEN, params) != 1 ||
	    EVP_MAC_update(ctx, salt, SALT_LEN) != 1 ||
	    (pwlen > 0 && EVP_MAC_update(ctx, pw, pwlen) != 1) ||
	    EVP_MAC_final(ctx, mac, &outl, MAC_LEN) != 1 || outl != MAC_LEN)
		goto fail;
	rc = 0;
fail:
	EVP_MAC_CTX_free(ctx);
	return rc;
}

static int derive(const uint8_t *pw, size_t pwlen, const uint8_t *salt, unsigned iterations,
                  uint8_t dk[DK_LEN])
{
	if (pwlen > INT_MAX)
		return -1;
	/* OpenSSL wants a non-NULL pointer even for an empty password. */
	if (PKCS5_PBKDF2_HMAC(pwlen ? (const char *)pw : "", (int)pwlen, salt, SALT_LEN,
	                      (int)iterations, EVP_sha512(), DK_LEN, dk) != 1)
		return -1;
	return 0;
}

int passwd_db_check(passwd_db *db, const uint8_t *user, size_t ulen, const uint8_t *pw,
                    size_t pwlen)
{
	const struct pw_entry *found;
	struct pw_entry *e;
	uint8_t mac[MAC_LEN], dk[DK_LEN];
	bool known, hit = false, ok;
	int rc = -1;

	if (!db || (!user && ulen) || (!pw && pwlen))
		return -1;
	found = lookup(db, user, ulen);
	known = found != NULL;
	/* Entries are only written under the lock (cache fields); the cast
	 * lets us reach them without a separate mutable index. */
	e = known ? (struct pw_entry *)found : &db->dummy;

	/* Computed for unknown users too, so both paths do the same work. */
	if (cache_mac(db, e->salt, pw, pwlen, mac) != 0)
		goto out;
	pthread_mutex_lock(&db->lock);
	hit = known && e->cached && CRYPTO_memcmp(e->mac, mac, MAC_LEN) == 0;
	pthread_mutex_unlock(&db->lock);
	if (hit) {
		rc = 0;
		goto out;
	}
	if (derive(pw, pwlen, e->salt, e->iterations, dk) != 0)
		goto out;
	/* Counted once the derivation is done, for the known and the dummy entry
	 * alike: the counters are how tests see which paths pay for PBKDF2. */
	atomic_fetch_add_explicit(&pbkdf2_runs, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&pbkdf2_iterations, e->iterations, memory_order_relaxed);
	ok = CRYPTO_memcmp(dk, e->dk, DK_LEN) == 0;
	if (!ok || !known)
		goto out;
	pthread_mutex_lock(&db->lock);
	memcpy(e->mac, mac, MAC_LEN);
	e->cached = true;
	pthread_mutex_unlock(&db->lock);
	rc = 0;
out:
	OPENSSL_cleanse(mac, sizeof(mac));
	OPENSSL_cleanse(dk, sizeof(dk));
	return rc;
}

/* ---------------------------------------------------------------- hashing */

int passwd_hash(const uint8_t *pw, size_t pwlen, unsigned iterations, char *out, size_t outlen)
{
	uint8_t salt[SALT_LEN], dk[DK_LEN];
	char salt64[SALT_B64_LEN + 1], dk64[DK_B64_LEN + 1];
	int n, rc = -1;

	if (iterations == 0)
		iterations = PASSWD_DEFAULT_ITERATIONS;
	/* Refuse to make a hash the loader would reject. */
	if (iterations < ITER_MIN || iterations > ITER_MAX || !out || (!pw && pwlen))
		return -1;
	/* Too small a buffer is known before the slow part. */
	n = snprintf(NULL, 0, HASH_PREFIX "%u$", iterations);
	if (n < 0 || (size_t)n + SALT_B64_LEN + 1 + DK_B64_LEN >= outlen)
		goto fail;
	if (RAND_bytes(salt, SALT_LEN) != 1)
		goto fail;
	if (derive(pw, pwlen, salt, iterations, dk) != 0)
		goto fail;
	EVP_EncodeBlock((unsigned char *)salt64, salt, SALT_LEN);
	EVP_EncodeBlock((unsigned char *)dk64, dk, DK_LEN);
	n = snprintf(out, outlen, HASH_PREFIX "%u$%s$%s", iterations, salt64, dk64);
	if (n < 0 || (size_t)n >= outlen)
		goto fail;
	rc = 0;
fail:
	OPENSSL_cleanse(dk, sizeof(dk));
	if (rc != 0 && outlen > 0)
		out[0] = '\0';
	return rc;
}

/* ---------------------------------------------------------------- editing */

/* A growable byte buffer for the new file content. */
struct outbuf {
	char *p; /* owned */
	size_t len, cap;
};

static int out_add(struct outbuf *b, const char *s, size_t n)
{
	if (b->cap - b->len < n) {
		size_t cap = b->cap ? b->cap : 4096;
		char *np;

		while (cap - b->len < n)
			cap *= 2;
		np = realloc(b->p, cap);
		if (!np)
			return -1;
		b->p = np;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	return 0;
}

/* Does this raw file line belong to `user`? */
static bool line_is_user(const char *line, size_t len, const char *user, size_t ulen)
{
	if (line_is_ignored(line, len))
		return false;
	return len > ulen && line[ulen] == ':' && memcmp(line, user, ulen) == 0;
}

/*
 * Copies the lines of old (may be NULL) into b, dropping those of `user`;
 * the first of them is replaced by `repl` when that is not NULL. *found
 * tells whether the user had a line. Returns 0, or -1 on allocation failure.
 */
static int rewrite_lines(struct outbuf *b, const char *old, size_t oldlen, const char *user,
                         const char *repl, bool *found)
{
	size_t ulen = strlen(user);

	*found = false;
	for (size_t pos = 0; pos < oldlen;) {
		const char *line = old + pos;
		const char *nl = memchr(line, '\n', oldlen - pos);
		size_t ll = nl ? (size_t)(nl - line) : oldlen - pos;

		pos += ll + (nl ? 1 : 0);
		if (line_is_user(line, ll, user, ulen)) {
			if (!*found && repl &&
			    (out_add(b, repl, strlen(repl)) != 0 || out_add(b, "\n", 1) != 0))
				return -1;
			*found = true;
			continue;
		}
		if (out_add(b, line, ll) != 0 || out_add(b, "\n", 1) != 0)
			return -1;
	}
	if (!*found && repl && (out_add(b, repl, strlen(repl)) != 0 || out_add(b, "\n", 1) != 0))
		return -1;
	return 0;
}

static int write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, data, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		data += w;
		len -= (size_t)w;
	}
	return 0;
}

/*
 * Writes data to path via a temporary file in the same directory and
 * rename(2), mode 0600, so readers see the old file or the new one.
 */
static int replace_file(const char *path, const char *data, size_t len, char *err, size_t errlen)
{
	char *tmp = NULL;
	int fd = -1, rc;
	bool created = false;

	if (asprintf(&tmp, "%s.tmpXXXXXX", path) < 0) {
		tmp = NULL;
		errno = ENOMEM;
		goto fail;
	}
	fd = mkstemp(tmp); /* creates with mode 0600 */
	if (fd < 0)
		goto fail;
	created = true;
	/* Explicit all the same: the mode is the point of the exercise. */
	if (fchmod(fd, 0600) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0)
		goto fail;
	rc = close(fd);
	fd = -1;
	if (rc != 0 || rename(tmp, path) != 0)
		goto fail;
	free(tmp);
	return 0;
fail:
	set_err(err, errlen, "%s: %s", tmp ? tmp : path, strerror(errno));
	if (fd >= 0)
		close(fd);
	if (created)
		unlink(tmp);
	free(tmp);
	return -1;
}

/* Validation shared by set and delete; also rejects names the file would read as a comment. */
static int check_user_for_file(const char *user, char *err, size_t errlen)
{
	const char *why;
	size_t i = 0;

	if (!user) {
		set_err(err, errlen, "no user name");
		return -1;
	}
	why = user_name_problem((const uint8_t *)user, strlen(user));
	if (!why) {
		while (user[i] == ' ')
			i++;
		if (user[i] == '#')
			why = "user name would read as a comment";
	}
	if (why) {
		set_err(err, errlen, "%s", why);
		return -1;
	}
	return 0;
}

int passwd_file_set(const char *path, const char *user, const uint8_t *pw, size_t pwlen,
                    unsigned iterations, bool create, char *err, size_t errlen)
{
	char hash[PASSWD_HASH_MAX];
	char *old = NULL, *line = NULL;
	size_t oldlen = 0;
	struct outbuf b = {0};
	bool found;
	int rc = -1;

	if (check_user_for_file(user, err, errlen) != 0)
		goto fail;
	if (!create && read_file(path, &old, &oldlen) != 0) {
		set_err(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (passwd_hash(pw, pwlen, iterations, hash, sizeof(hash)) != 0) {
		set_err(err, errlen, "cannot hash password (iterations must be 1000..10000000)");
		goto fail;
	}
	if (asprintf(&line, "%s:%s", user, hash) < 0) {
		line = NULL;
		set_err(err, errlen, "out of memory");
		goto fail;
	}
	if (rewrite_lines(&b, old, oldlen, user, line, &found) != 0) {
		set_err(err, errlen, "out of memory");
		goto fail;
	}
	if (replace_file(path, b.p ? b.p : "", b.len, err, errlen) != 0)
		goto fail;
	rc = 0;
fail:
	OPENSSL_cleanse(hash, sizeof(hash));
	free(line);
	free(old);
	free(b.p);
	return rc;
}

int passwd_file_delete(const char *path, const char *user, char *err, size_t errlen)
{
	char *old = NULL;
	size_t oldlen = 0;
	struct outbuf b = {0};
	bool found;
	int rc = -1;

	if (check_user_for_file(user, err, errlen) != 0)
		goto fail;
	if (read_file(path, &old, &oldlen) != 0) {
		set_err(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (rewrite_lines(&b, old, oldlen, user, NULL, &found) != 0) {
		set_err(err, errlen, "out of memory");
		goto fail;
	}
	if (!found) {
		set_err(err, errlen, "%s: no user '%s'", path, user);
		goto fail;
	}
	if (replace_file(path, b.p ? b.p : "", b.len, err, errlen) != 0)
		goto fail;
	rc = 0;
fail:
	free(old);
	free(b.p);
	return rc;
}
