/*
 * test_auth.c - password file and ACL.
 *
 * Password tests work in a private temporary directory. Where the contract
 * is about cost (the verification cache, unknown users costing as much as
 * wrong passwords) they count the PBKDF2 work passwd_db_check reports
 * (passwd_pbkdf2_runs/_iterations) instead of timing it: the answer is exact
 * and the same on an idle laptop and on a loaded CI machine.
 *
 * ACL tests load text with acl_load_string and check every answer of
 * acl_check_filter against acl_check on sample topics, so a classification
 * that contradicts the per-message check fails even if the table was wrong.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "auth/auth.h"

/* ---------------------------------------------------------------- helpers */

static char g_dir[64];

static int setup_dir(void **state)
{
	strcpy(g_dir, "/tmp/keepmq-test-auth-XXXXXX");
	return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
	DIR *d = opendir(g_dir);
	struct dirent *e;
	char p[512];

	if (d) {
		while ((e = readdir(d)) != NULL) {
			if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
				continue;
			snprintf(p, sizeof(p), "%s/%s", g_dir, e->d_name);
			unlink(p);
		}
		closedir(d);
	}
	rmdir(g_dir);
	return 0;
}

static const char *tpath(const char *name)
{
	static char p[4][256];
	static int k;

	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", g_dir, name);
	return p[k];
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
	assert_int_equal(fclose(f), 0);
}

/* Returns a malloc'd NUL-terminated copy of the file. */
static char *read_text(const char *path)
{
	FILE *f = fopen(path, "rb");
	char *b;
	long n;

	assert_non_null(f);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	n = ftell(f);
	rewind(f);
	b = malloc((size_t)n + 1);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
	b[n] = '\0';
	fclose(f);
	return b;
}

static size_t count_dir_entries(void)
{
	DIR *d = opendir(g_dir);
	struct dirent *e;
	size_t n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static int check(passwd_db *db, const char *user, const char *pw)
{
	return passwd_db_check(db, (const uint8_t *)user, strlen(user), (const uint8_t *)pw,
	                       strlen(pw));
}

/* Appends "user:hash\n" for pw at the given iteration count to buf. */
static void add_user_line(char *buf, size_t cap, const char *user, const char *pw,
                          unsigned iterations)
{
	char h[PASSWD_HASH_MAX];

	assert_int_equal(passwd_hash((const uint8_t *)pw, strlen(pw), iterations, h, sizeof(h)), 0);
	size_t n = strlen(buf);
	snprintf(buf + n, cap - n, "%s:%s\n", user, h);
}

static passwd_db *load_db(const char *path)
{
	passwd_db *db = NULL;
	char err[512] = "";

	if (passwd_db_load(path, &db, err, sizeof(err)) != 0)
		fail_msg("load %s: %s", path, err);
	assert_non_null(db);
	return db;
}

/* ---------------------------------------------------------------- passwords */

static void test_hash_format(void **state)
{
	char h[PASSWD_HASH_MAX], h2[PASSWD_HASH_MAX];

	assert_int_equal(passwd_hash((const uint8_t *)"pw", 2, 1000, h, sizeof(h)), 0);
	assert_true(strncmp(h, "$pbkdf2-sha512$1000$", 20) == 0);
	/* 24 base64 characters of salt, 88 of key. */
	const char *salt = h + 20, *dk = strchr(salt, '$');
	assert_non_null(dk);
	assert_int_equal(dk - salt, 24);
	assert_int_equal(strlen(dk + 1), 88);
	/* A fresh salt each time. */
	assert_int_equal(passwd_hash((const uint8_t *)"pw", 2, 1000, h2, sizeof(h2)), 0);
	assert_string_not_equal(h, h2);
	/* 0 means the default. */
	assert_int_equal(passwd_hash((const uint8_t *)"pw", 2, 0, h, sizeof(h)), 0);
	assert_true(strncmp(h, "$pbkdf2-sha512$20000$", 21) == 0);
	/* Counts the loader would refuse are refused here too. */
	assert_int_equal(passwd_hash((const uint8_t *)"pw", 2, 999, h, sizeof(h)), -1);
	assert_int_equal(passwd_hash((const uint8_t *)"pw", 2, 10000001, h, sizeof(h)), -1);
	assert_int_equal(passwd_hash((const uint8_t *)"pw", 2, 10000000, h, 20), -1);
}

static void test_check_basic(void **state)
{
	char buf[4096] = "# users\n\n";
	passwd_db *db;

	add_user_line(buf, sizeof(buf), "alice", "wonderland", 1000);
	add_user_line(buf, sizeof(buf), "bob", "", 1000); /* empty passwords are passwords */
	add_user_line(buf, sizeof(buf), "carol smith", "p\xc3\xa4ss", 1200);
	write_text(tpath("basic"), buf);
	db = load_db(tpath("basic"));
	assert_int_equal(passwd_db_count(db), 3);

	assert_int_equal(check(db, "alice", "wonderland"), 0);
	assert_int_equal(check(db, "alice", "wonderlanD"), -1);
	assert_int_equal(check(db, "alice", "wonderland "), -1);
	assert_int_equal(check(db, "alice", ""), -1);
	assert_int_equal(check(db, "bob", ""), 0);
	assert_int_equal(check(db, "bob", "x"), -1);
	assert_int_equal(check(db, "carol smith", "p\xc3\xa4ss"), 0);
	/* Unknown users, including prefixes and case variants of real ones. */
	assert_int_equal(check(db, "mallory", "wonderland"), -1);
	assert_int_equal(check(db, "alic", "wonderland"), -1);
	assert_int_equal(check(db, "Alice", "wonderland"), -1);
	assert_int_equal(check(db, "", ""), -1);
	/* Binary password bytes: a NUL inside does not truncate. */
	assert_int_equal(
	    passwd_db_check(db, (const uint8_t *)"alice", 5, (const uint8_t *)"wonderland\0x", 12),
	    -1);
	/* The user name is compared as bytes with its length. */
	assert_int_equal(
	    passwd_db_check(db, (const uint8_t *)"alicex", 5, (const uint8_t *)"wonderland", 10),
	    0);
	passwd_db_free(&db);
	assert_null(db);
	passwd_db_free(&db); /* NULL-safe */
	passwd_db_free(NULL);
}

static void test_iterations_honoured(void **state)
{
	char h[PASSWD_HASH_MAX], line[PASSWD_HASH_MAX + 16];
	passwd_db *db;

	assert_int_equal(passwd_hash((const uint8_t *)"secret", 6, 1000, h, sizeof(h)), 0);
	snprintf(line, sizeof(line), "u:%s\n", h);
	write_text(tpath("iter"), line);
	db = load_db(tpath("iter"));
	assert_int_equal(check(db, "u", "secret"), 0);
	passwd_db_free(&db);

	/* Same salt and key, different stored count: must no longer verify,
	 * which shows the stored count is the one used. */
	char *p = strstr(line, "$1000$");
	assert_non_null(p);
	memcpy(p, "$1001$", 6);
	write_text(tpath("iter"), line);
	db = load_db(tpath("iter"));
	assert_int_equal(check(db, "u", "secret"), -1);
	passwd_db_free(&db);

	/* Entries with different counts live side by side. */
	char buf[2048] = "";
	add_user_line(buf, sizeof(buf), "a", "pa", 1000);
	add_user_line(buf, sizeof(buf), "b", "pb", 3000);
	write_text(tpath("iter"), buf);
	db = load_db(tpath("iter"));
	assert_int_equal(check(db, "a", "pa"), 0);
	assert_int_equal(check(db, "b", "pb"), 0);
	assert_int_equal(check(db, "b", "pa"), -1);
	passwd_db_free(&db);
}

/*
 * Runs one check, asserts its result and that it did exactly `runs` PBKDF2
 * derivations totalling `iterations` iterations. The counters are
 * process-wide, which is exact here: cmocka runs the tests one after the
 * other and no test leaves a thread behind. A macro so that a failure names
 * the caller's line, not this helper's.
 */
#define check_costs(db, user, pw, want, runs, iterations)                                          \
	check_costs_at(db, user, pw, want, runs, iterations, __FILE__, __LINE__)

static void check_costs_at(passwd_db *db, const char *user, const char *pw, int want, uint64_t runs,
                           uint64_t iterations, const char *file, int line)
{
	uint64_t r0 = passwd_pbkdf2_runs(), i0 = passwd_pbkdf2_iterations();

	_assert_int_equal(cast_to_largest_integral_type(check(db, user, pw)),
	                  cast_to_largest_integral_type(want), file, line);
	_assert_int_equal(passwd_pbkdf2_runs() - r0, runs, file, line);
	_assert_int_equal(passwd_pbkdf2_iterations() - i0, iterations, file, line);
}

static void test_cache(void **state)
{
	char buf[2048] = "";
	passwd_db *db;

	/* Same password, different salts: the cache must be per user. */
	add_user_line(buf, sizeof(buf), "alice", "right", 1000);
	add_user_line(buf, sizeof(buf), "bob", "right", 1200);
	write_text(tpath("cache"), buf);
	db = load_db(tpath("cache"));
	/* Wrong passwords never fill the cache: each one is a full PBKDF2. */
	check_costs(db, "alice", "wrong", -1, 1, 1000);
	check_costs(db, "alice", "wrong", -1, 1, 1000);

	check_costs(db, "alice", "right", 0, 1, 1000); /* miss, fills the cache */
	check_costs(db, "alice", "right", 0, 0, 0);    /* hits */
	check_costs(db, "alice", "right", 0, 0, 0);
	/* After a cached success a wrong password is still rejected, at the
	 * full price (the cache makes no guess cheaper), near misses included... */
	check_costs(db, "alice", "wrong", -1, 1, 1000);
	check_costs(db, "alice", "righ", -1, 1, 1000);
	check_costs(db, "alice", "right\n", -1, 1, 1000);
	check_costs(db, "alice", "", -1, 1, 1000);
	/* A NUL inside is a different password. (Trailing NULs alone are not:
	 * HMAC pads a short key with zeros, so PBKDF2 derives the same key from
	 * "right\0" as from "right", which is why this probe has the "x".) */
	uint64_t r0 = passwd_pbkdf2_runs();
	assert_int_equal(
	    passwd_db_check(db, (const uint8_t *)"alice", 5, (const uint8_t *)"right\0x", 7), -1);
	assert_int_equal(passwd_pbkdf2_runs() - r0, 1);
	/* ...and does not evict the right one. */
	check_costs(db, "alice", "right", 0, 0, 0);
	/* alice's cached password does not let bob in cheaply, though it is his too. */
	check_costs(db, "bob", "right", 0, 1, 1200);
	check_costs(db, "bob", "right", 0, 0, 0);
	check_costs(db, "alice", "right", 0, 0, 0);
	passwd_db_free(&db);

	/* A reload starts with an empty cache (how a changed password takes effect). */
	db = load_db(tpath("cache"));
	check_costs(db, "alice", "right", 0, 1, 1000);
	check_costs(db, "alice", "right", 0, 0, 0);
	passwd_db_free(&db);
}

static void test_unknown_user_costs_the_same(void **state)
{
	char buf[2048] = "";
	passwd_db *db;

	add_user_line(buf, sizeof(buf), "alice", "right", 2000);
	add_user_line(buf, sizeof(buf), "bob", "other", 2000);
	add_user_line(buf, sizeof(buf), "old", "x", 1000); /* the odd one out */
	write_text(tpath("unknown"), buf);
	db = load_db(tpath("unknown"));
	check_costs(db, "alice", "right", 0, 1, 2000); /* cached: must not matter */
	/* A wrong password for a typical user: one derivation at the common count. */
	check_costs(db, "alice", "wrong", -1, 1, 2000);
	/* An unknown user: exactly the same work, at the most common count of the
	 * file (not the odd 1000), so the cost does not say whether the name exists. */
	check_costs(db, "nobody", "wrong", -1, 1, 2000);
	check_costs(db, "nobody", "wrong", -1, 1, 2000); /* the dummy is never cached */
	/* Also for names that only differ from real ones a little, with the real
	 * user's cached password. */
	check_costs(db, "alic", "right", -1, 1, 2000);
	check_costs(db, "Alice", "right", -1, 1, 2000);
	check_costs(db, "", "", -1, 1, 2000);
	/* A known user is verified with their own count. */
	check_costs(db, "old", "y", -1, 1, 1000);
	passwd_db_free(&db);

	/* No most common count: the tie goes to the larger one. */
	buf[0] = '\0';
	add_user_line(buf, sizeof(buf), "a", "pa", 1000);
	add_user_line(buf, sizeof(buf), "b", "pb", 3000);
	write_text(tpath("unknown"), buf);
	db = load_db(tpath("unknown"));
	check_costs(db, "c", "pa", -1, 1, 3000);
	passwd_db_free(&db);

	/* An empty file still costs a derivation, at the default count. */
	write_text(tpath("unknown"), "# nobody yet\n");
	db = load_db(tpath("unknown"));
	check_costs(db, "a", "pa", -1, 1, PASSWD_DEFAULT_ITERATIONS);
	passwd_db_free(&db);
}

struct thread_arg {
	passwd_db *db;
	int failures;
};

static void *check_thread(void *p)
{
	struct thread_arg *a = p;

	for (int i = 0; i < 20; i++) {
		if (check(a->db, "alice", "right") != 0)
			a->failures++;
		if (check(a->db, "alice", "wrong") != -1)
			a->failures++;
		if (check(a->db, "bob", "bobpw") != 0)
			a->failures++;
		if (check(a->db, "eve", "bobpw") != -1)
			a->failures++;
	}
	return NULL;
}

static void test_cache_threads(void **state)
{
	char buf[2048] = "";
	pthread_t t[4];
	struct thread_arg a[4];
	passwd_db *db;

	add_user_line(buf, sizeof(buf), "alice", "right", 1000);
	add_user_line(buf, sizeof(buf), "bob", "bobpw", 1000);
	write_text(tpath("threads"), buf);
	db = load_db(tpath("threads"));
	uint64_t r0 = passwd_pbkdf2_runs();
	for (int i = 0; i < 4; i++) {
		a[i] = (struct thread_arg){db, 0};
		assert_int_equal(pthread_create(&t[i], NULL, check_thread, &a[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		assert_int_equal(pthread_join(t[i], NULL), 0);
		assert_int_equal(a[i].failures, 0);
	}
	/* Every wrong password and unknown user derives (2 x 80); a thread can
	 * miss the cache for alice and for bob only before its own first success,
	 * so the right passwords add between 2 and 8 however the threads interleave. */
	uint64_t runs = passwd_pbkdf2_runs() - r0;
	assert_in_range(runs, 160 + 2, 160 + 8);
	passwd_db_free(&db);
}

static void test_file_set_delete(void **state)
{
	const char *path = tpath("pwfile");
	char err[512] = "";
	char *text;
	struct stat st;
	passwd_db *db;
	size_t entries_before = count_dir_entries();

	write_text(path, "# operators\n"
	                 "\n"
	                 "  # indented comment\n"
	                 "zed:not-a-hash-yet\n"
	                 "# end"); /* no final newline */
	/* Replacing zed's line makes the file valid. */
	assert_int_equal(
	    passwd_file_set(path, "zed", (const uint8_t *)"z1", 2, 1000, false, err, sizeof(err)),
	    0);
	assert_int_equal(
	    passwd_file_set(path, "alice", (const uint8_t *)"a1", 2, 1000, false, err, sizeof(err)),
	    0);
	assert_int_equal(
	    passwd_file_set(path, "bob", (const uint8_t *)"b1", 2, 1000, false, err, sizeof(err)),
	    0);
	text = read_text(path);
	/* Comments kept in place, zed replaced where it was, new users appended. */
	const char *head = "# operators\n\n  # indented comment\nzed:$pbkdf2-sha512$1000$";
	assert_true(strncmp(text, head, strlen(head)) == 0);
	assert_non_null(strstr(text, "\n# end\nalice:$pbkdf2-sha512$1000$"));
	assert_non_null(strstr(text, "\nbob:$pbkdf2-sha512$1000$"));
	free(text);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	db = load_db(path);
	assert_int_equal(passwd_db_count(db), 3);
	assert_int_equal(check(db, "zed", "z1"), 0);
	assert_int_equal(check(db, "alice", "a1"), 0);
	assert_int_equal(check(db, "bob", "b1"), 0);
	passwd_db_free(&db);

	/* Replace alice: new password works, old does not, others untouched. */
	text = read_text(path);
	char *bob_line = strdup(strstr(text, "\nbob:"));
	free(text);
	assert_int_equal(
	    passwd_file_set(path, "alice", (const uint8_t *)"a2", 2, 2000, false, err, sizeof(err)),
	    0);
	text = read_text(path);
	assert_non_null(strstr(text, bob_line));
	assert_non_null(strstr(text, "\n# end\nalice:$pbkdf2-sha512$2000$"));
	free(text);
	free(bob_line);
	db = load_db(path);
	assert_int_equal(passwd_db_count(db), 3);
	assert_int_equal(check(db, "alice", "a2"), 0);
	assert_int_equal(check(db, "alice", "a1"), -1);
	assert_int_equal(check(db, "bob", "b1"), 0);
	passwd_db_free(&db);

	/* Delete bob; comments and the others stay. */
	assert_int_equal(passwd_file_delete(path, "bob", err, sizeof(err)), 0);
	text = read_text(path);
	assert_null(strstr(text, "bob:"));
	assert_non_null(strstr(text, "# operators\n\n  # indented comment\nzed:"));
	assert_non_null(strstr(text, "\n# end\nalice:"));
	free(text);
	db = load_db(path);
	assert_int_equal(passwd_db_count(db), 2);
	assert_int_equal(check(db, "bob", "b1"), -1);
	assert_int_equal(check(db, "zed", "z1"), 0);
	passwd_db_free(&db);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	/* Deleting an absent user fails and says so. */
	err[0] = '\0';
	assert_int_equal(passwd_file_delete(path, "bob", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "bob"));
	/* "ali" is not "alice". */
	assert_int_equal(passwd_file_delete(path, "ali", err, sizeof(err)), -1);

	/* Unusable names are refused and the file is left alone. */
	text = read_text(path);
	const char *bad[] = {"", "a:b", "tab\tname", "nl\n", "#hash", "  #x", "del\x7f"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(passwd_file_set(path, bad[i], (const uint8_t *)"x", 1, 1000, false,
		                                 err, sizeof(err)),
		                 -1);
	char *after = read_text(path);
	assert_string_equal(text, after);
	free(after);
	free(text);

	/* Missing file without create: error. With create: made, 0600. */
	assert_int_equal(passwd_file_set(tpath("absent"), "u", (const uint8_t *)"x", 1, 1000, false,
	                                 err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "absent"));
	assert_int_equal(passwd_file_set(tpath("fresh"), "u", (const uint8_t *)"x", 1, 1000, true,
	                                 err, sizeof(err)),
	                 0);
	assert_int_equal(stat(tpath("fresh"), &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	/* create on an existing file empties it first. */
	assert_int_equal(
	    passwd_file_set(path, "solo", (const uint8_t *)"s", 1, 1000, true, err, sizeof(err)),
	    0);
	db = load_db(path);
	assert_int_equal(passwd_db_count(db), 1);
	assert_int_equal(check(db, "solo", "s"), 0);
	assert_int_equal(check(db, "zed", "z1"), -1);
	passwd_db_free(&db);
	/* Failed iteration counts are refused. */
	assert_int_equal(
	    passwd_file_set(path, "solo", (const uint8_t *)"s", 1, 999, false, err, sizeof(err)),
	    -1);
	/* No temporary files left behind: only pwfile and fresh are new. */
	assert_int_equal(count_dir_entries(), entries_before + 2);
	unlink(path);
	unlink(tpath("fresh"));
}

static void test_load_errors(void **state)
{
	char good[PASSWD_HASH_MAX], good2[PASSWD_HASH_MAX];
	char text[2048], err[512];
	passwd_db *db;

	assert_int_equal(passwd_hash((const uint8_t *)"x", 1, 1000, good, sizeof(good)), 0);
	assert_int_equal(passwd_hash((const uint8_t *)"x", 1, 1000, good2, sizeof(good2)), 0);
	const char *salt = good + 20; /* after "$pbkdf2-sha512$1000$" */
	const char *dk = strchr(salt, '$') + 1;
	char salt64[32];
	snprintf(salt64, sizeof(salt64), "%.24s", salt);

	struct {
		int kind; /* 0: `lines` then a good hash and "\n"; 1: `lines` alone */
		const char *lines;
		const char *want; /* NULL: loads */
	} cases[] = {
	    {1, "# c\nnocolon\n", ":2: expected user:hash"},
	    {0, "\n\n:", ":3: empty user name"},
	    {0, "a\tb:", ":1: user name contains a control character"},
	    {0, "ok:", NULL}, /* control: valid */
	    {1, "u:plaintext\n", ":1: bad hash"},
	    {1, "u:$pbkdf2-sha256$1000$AAAA$AAAA\n", ":1: bad hash"},
	    {1, "u:$pbkdf2-sha512$$x$y\n", ":1: bad hash"},
	    {1, "u:$pbkdf2-sha512$12a4$x$y\n", ":1: bad hash"},
	    {1, "u:\n", ":1: bad hash"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (cases[i].kind == 0)
			snprintf(text, sizeof(text), "%s%s\n", cases[i].lines, good);
		else
			snprintf(text, sizeof(text), "%s", cases[i].lines);
		write_text(tpath("bad"), text);
		err[0] = '\0';
		db = NULL;
		int rc = passwd_db_load(tpath("bad"), &db, err, sizeof(err));
		if (!cases[i].want) {
			assert_int_equal(rc, 0);
			passwd_db_free(&db);
			continue;
		}
		assert_int_equal(rc, -1);
		assert_null(db);
		/* "path:line: message" */
		assert_true(strncmp(err, tpath("bad"), strlen(tpath("bad"))) == 0);
		if (!strstr(err, cases[i].want))
			fail_msg("case %zu: got '%s', want '%s'", i, err, cases[i].want);
	}

	/* Hash strings built from a good one with one part broken. */
	struct {
		const char *iter, *salt, *dk, *want;
	} parts[] = {
	    {"1000", salt64, dk, NULL},
	    {"999", salt64, dk, "iteration count"},
	    {"0", salt64, dk, "iteration count"},
	    {"10000001", salt64, dk, "iteration count"},
	    {"99999999999999", salt64, dk, "bad hash"},
	    {"10000000", salt64, dk, NULL},
	    {"1000", "AAAA", dk, "salt"},                     /* 3 bytes */
	    {"1000", "AAAAAAAAAAAAAAAAAAAAAA=", dk, "salt"},  /* bad padding */
	    {"1000", "AAAAAAAAAAAAAAAAAAAA*A==", dk, "salt"}, /* bad character */
	    {"1000", salt64, "AAAA", "key"},
	    {"1000", salt64, "", "key"},
	};
	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		snprintf(text, sizeof(text), "# header\nv:$pbkdf2-sha512$%s$%s$%s\n", parts[i].iter,
		         parts[i].salt, parts[i].dk);
		write_text(tpath("bad"), text);
		db = NULL;
		err[0] = '\0';
		int rc = passwd_db_load(tpath("bad"), &db, err, sizeof(err));
		if (!parts[i].want) {
			assert_int_equal(rc, 0);
			passwd_db_free(&db);
			continue;
		}
		assert_int_equal(rc, -1);
		if (!strstr(err, ":2: ") || !strstr(err, parts[i].want))
			fail_msg("part %zu: got '%s', want ':2: ...%s'", i, err, parts[i].want);
	}

	/* Duplicate users: reported at the second occurrence. */
	snprintf(text, sizeof(text), "a:%s\n# x\nb:%s\na:%s\n", good, good, good2);
	write_text(tpath("bad"), text);
	assert_int_equal(passwd_db_load(tpath("bad"), &db, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ":4: duplicate user"));

	/* Missing file. */
	assert_int_equal(passwd_db_load(tpath("nope"), &db, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "nope"));

	/* Tolerated: CRLF, trailing blanks, blank lines with spaces, empty file. */
	snprintf(text, sizeof(text), "a:%s\r\n   \nb:%s  \t\n\t# tabbed comment\n", good, good);
	write_text(tpath("ok"), text);
	db = load_db(tpath("ok"));
	assert_int_equal(passwd_db_count(db), 2);
	assert_int_equal(check(db, "a", "x"), 0);
	assert_int_equal(check(db, "b", "x"), 0);
	passwd_db_free(&db);
	write_text(tpath("ok"), "");
	db = load_db(tpath("ok"));
	assert_int_equal(passwd_db_count(db), 0);
	assert_int_equal(check(db, "a", "x"), -1);
	passwd_db_free(&db);
	unlink(tpath("ok"));
	unlink(tpath("bad"));

	/* A user name of 65535 bytes is fine, 65536 is not. */
	size_t big = 65536 + PASSWD_HASH_MAX + 8;
	char *long_text = malloc(big);
	assert_non_null(long_text);
	memset(long_text, 'n', 65535);
	snprintf(long_text + 65535, big - 65535, ":%s\n", good);
	write_text(tpath("long"), long_text);
	db = load_db(tpath("long"));
	assert_int_equal(passwd_db_count(db), 1);
	assert_int_equal(
	    passwd_db_check(db, (const uint8_t *)long_text, 65535, (const uint8_t *)"x", 1), 0);
	passwd_db_free(&db);
	memset(long_text, 'n', 65536);
	snprintf(long_text + 65536, big - 65536, ":%s\n", good);
	write_text(tpath("long"), long_text);
	assert_int_equal(passwd_db_load(tpath("long"), &db, err, sizeof(err)), -1);
	assert_non_null(strstr(err, ":1: user name longer"));
	free(long_text);
	unlink(tpath("long"));
}

static void test_many_users(void **state)
{
	/* Enough users to grow the index several times. */
	size_t cap = 400 * (PASSWD_HASH_MAX + 16);
	char *buf = calloc(1, cap);
	char h[PASSWD_HASH_MAX], name[16];
	passwd_db *db;

	assert_non_null(buf);
	assert_int_equal(passwd_hash((const uint8_t *)"same", 4, 1000, h, sizeof(h)), 0);
	for (int i = 0; i < 300; i++) {
		size_t n = strlen(buf);
		snprintf(buf + n, cap - n, "user%d:%s\n", i, h);
	}
	write_text(tpath("many"), buf);
	free(buf);
	db = load_db(tpath("many"));
	assert_int_equal(passwd_db_count(db), 300);
	for (int i = 0; i < 300; i += 37) {
		snprintf(name, sizeof(name), "user%d", i);
		assert_int_equal(check(db, name, "same"), 0);
	}
	assert_int_equal(check(db, "user300", "same"), -1);
	passwd_db_free(&db);
	unlink(tpath("many"));
}

/* ---------------------------------------------------------------- ACL helpers */

static acl *acl_text(const char *text)
{
	acl *a = NULL;
	char err[512] = "";

	if (acl_load_string("t.acl", text, strlen(text), &a, err, sizeof(err)) != 0)
		fail_msg("acl load: %s", err);
	assert_non_null(a);
	return a;
}

/* user NULL: anonymous. */
static bool can(const acl *a, const char *cid, const char *user, const char *topic, int access)
{
	mqtt_str u = mqtt_str_c(user);
	return acl_check(a, mqtt_str_c(cid), user ? &u : NULL, mqtt_str_c(topic), access);
}

static int filt(const acl *a, const char *cid, const char *user, const char *filter)
{
	mqtt_str u = mqtt_str_c(user);
	return acl_check_filter(a, mqtt_str_c(cid), user ? &u : NULL, mqtt_str_c(filter));
}

#define R ACL_READ
#define W ACL_WRITE

/* Topics used to cross-check filter classifications against acl_check. */
static const char *sample_topics[] = {
    "a",
    "a/b",
    "a/b/c",
    "a/secret",
    "a/secret/x",
    "a/x/y",
    "b",
    "b/x",
    "b/x/c",
    "b/y/c",
    "b/x/d",
    "b/x/c/d",
    "d",
    "d/e",
    "d/e/f",
    "d/x",
    "w",
    "w/x",
    "x",
    "x/y",
    "x/z",
    "x/y/z",
    "q",
    "q/r",
    "$SYS",
    "$SYS/broker",
    "$SYS/x/y",
    "/",
    "/a",
    "a/",
    "c/c1/x",
    "c/c2/x",
    "c/c1",
    "clients/x/a",
    "clients/+",
    "clients/x",
    "+",
    "#",
    "$x",
    "e/",
    "e//f",
    "dev/c1",
    "users/u1/inbox",
};

/* Checks a classification against acl_check on the sample topics. */
static void assert_filter(const acl *a, const char *cid, const char *user, const char *filter,
                          int want)
{
	int got = filt(a, cid, user, filter);
	mqtt_str f = mqtt_str_c(filter);

	if (got != want)
		fail_msg("filter '%s' (cid %s, user %s): got %d, want %d", filter, cid,
		         user ? user : "(anon)", got, want);
	if (!mqtt_topic_filter_valid(f))
		return;
	for (size_t i = 0; i < sizeof(sample_topics) / sizeof(sample_topics[0]); i++) {
		mqtt_str t = mqtt_str_c(sample_topics[i]);
		if (!mqtt_topic_name_valid(t) || !mqtt_topic_matches(f, t))
			continue;
		bool r = can(a, cid, user, sample_topics[i], R);
		if ((got == ACL_FILTER_ALLOW && !r) || (got == ACL_FILTER_DENY && r))
			fail_msg("filter '%s' classified %d but topic '%s' read=%d", filter, got,
			         sample_topics[i], r);
	}
}

/* ---------------------------------------------------------------- ACL */

static void test_acl_anonymous_and_users(void **state)
{
	acl *a = acl_text("# anonymous clients\n"
	                  "topic read public/#\n"
	                  "topic write anon/in\n"
	                  "\n"
	                  "user alice\n"
	                  "topic readwrite alice/#\n"
	                  "topic read shared/+\n"
	                  "user bob\n"
	                  "  topic   read   bob/x  \n"
	                  "user alice\n"
	                  "topic extra\n" /* no access word: readwrite */
	                  "user  john smith \n"
	                  "topic read js\n");

	/* Anonymous: the rules before the first user line. */
	assert_true(can(a, "c", NULL, "public/a", R));
	assert_true(can(a, "c", NULL, "public", R)); /* '#' matches the parent */
	assert_false(can(a, "c", NULL, "public/a", W));
	assert_true(can(a, "c", NULL, "anon/in", W));
	assert_false(can(a, "c", NULL, "anon/in", R));
	assert_false(can(a, "c", NULL, "alice/x", R));
	/* A zero-length user name is anonymous too. */
	assert_true(can(a, "c", "", "public/a", R));
	assert_false(can(a, "c", "", "alice/x", R));

	/* Users get their own section and not the anonymous one. */
	assert_true(can(a, "c", "alice", "alice/x", R));
	assert_true(can(a, "c", "alice", "alice/x/y", W));
	assert_true(can(a, "c", "alice", "shared/q", R));
	assert_false(can(a, "c", "alice", "shared/q", W));
	assert_false(can(a, "c", "alice", "shared/q/r", R));
	assert_false(can(a, "c", "alice", "public/a", R));
	/* alice's second section is merged with the first. */
	assert_true(can(a, "c", "alice", "extra", R));
	assert_true(can(a, "c", "alice", "extra", W));
	assert_true(can(a, "c", "bob", "bob/x", R));
	assert_false(can(a, "c", "bob", "bob/x", W));
	assert_false(can(a, "c", "bob", "alice/x", R));
	assert_false(can(a, "c", "bob", "extra", R));
	/* Names are exact (blanks inside kept, around trimmed). */
	assert_true(can(a, "c", "john smith", "js", R));
	assert_false(can(a, "c", "john", "js", R));
	assert_false(can(a, "c", "Alice", "alice/x", R));
	assert_false(can(a, "c", "alic", "alice/x", R));
	/* A user without a section has nothing (no patterns here). */
	assert_false(can(a, "c", "carol", "public/a", R));
	assert_false(can(a, "c", "carol", "alice/x", R));
	acl_free(&a);
	assert_null(a);
	acl_free(&a);
	acl_free(NULL);
}

static void test_acl_patterns(void **state)
{
	acl *a = acl_text("pattern readwrite clients/%c/#\n"
	                  "pattern read users/%u/inbox\n"
	                  "pattern write log/%u/%c\n"
	                  "pattern read dev/x%cy\n"
	                  "topic read lit/%c\n"
	                  "user u1\n"
	                  "pattern read late/%c\n"); /* patterns are global wherever they stand */

	assert_true(can(a, "c1", "u1", "clients/c1/a", R));
	assert_true(can(a, "c1", "u1", "clients/c1/a", W));
	assert_true(can(a, "c1", "u1", "clients/c1", R));
	assert_false(can(a, "c1", "u1", "clients/c2/a", R));
	assert_false(can(a, "c1", "u1", "clients/c11/a", R));
	assert_false(can(a, "c11", "u1", "clients/c1/a", R));
	assert_true(can(a, "c1", "u1", "users/u1/inbox", R));
	assert_false(can(a, "c1", "u1", "users/u1/inbox", W));
	assert_false(can(a, "c1", "u2", "users/u1/inbox", R));
	assert_true(can(a, "c1", "u1", "log/u1/c1", W));
	assert_false(can(a, "c1", "u1", "log/u1/c2", W));
	assert_false(can(a, "c1", "u1", "log/c1/u1", W));
	assert_true(can(a, "c1", "u1", "dev/xc1y", R));
	assert_false(can(a, "c1", "u1", "dev/xc1", R));
	assert_true(can(a, "q", "other", "late/q", R));
	assert_true(can(a, "q", NULL, "late/q", R));

	/* Anonymous clients get %c patterns but never %u ones. */
	assert_true(can(a, "c1", NULL, "clients/c1/a", R));
	assert_false(can(a, "c1", NULL, "users//inbox", R));
	assert_false(can(a, "c1", NULL, "users/%u/inbox", R));
	assert_false(can(a, "c1", "", "users//inbox", R));
	assert_false(can(a, "c1", NULL, "log//c1", W));

	/* In a `topic` line %c is literal text. */
	assert_true(can(a, "c1", NULL, "lit/%c", R));
	assert_false(can(a, "c1", NULL, "lit/c1", R));

	/* An empty client id substitutes as an empty level, literally. */
	assert_true(can(a, "", NULL, "clients//x", R));
	assert_false(can(a, "", NULL, "clients/x", R));

	/* Filters. */
	assert_filter(a, "c1", "u1", "clients/c1/#", ACL_FILTER_ALLOW);
	assert_filter(a, "c1", "u1", "clients/c1/x", ACL_FILTER_ALLOW);
	assert_filter(a, "c1", "u1", "clients/+/x", ACL_FILTER_PARTIAL);
	assert_filter(a, "c1", "u1", "clients/#", ACL_FILTER_PARTIAL);
	assert_filter(a, "c1", "u1", "clients/c2/#", ACL_FILTER_DENY);
	assert_filter(a, "c1", "u1", "users/u1/inbox", ACL_FILTER_ALLOW);
	assert_filter(a, "c1", "u1", "users/+/inbox", ACL_FILTER_PARTIAL);
	assert_filter(a, "c1", "u1", "log/#", ACL_FILTER_DENY); /* write only */
	assert_filter(a, "c1", NULL, "users/#", ACL_FILTER_DENY);
	acl_free(&a);
}

static void test_acl_wildcard_injection(void **state)
{
	acl *a = acl_text("pattern readwrite clients/%c/#\n"
	                  "pattern read u/%u/#\n"
	                  "pattern read %c/own\n"
	                  "pattern deny clients/%c/locked\n");

	/* Control: the rules work for ordinary ids. */
	assert_true(can(a, "x", "n", "clients/x/a", R));
	assert_true(can(a, "x", "n", "u/n/a", R));
	assert_true(can(a, "x", "n", "x/own", R));
	assert_filter(a, "x", "n", "clients/x/#", ACL_FILTER_PARTIAL); /* the deny intersects */
	assert_filter(a, "x", "n", "clients/x/a/#", ACL_FILTER_ALLOW);

	/* '+' and '#' in a client id are literal, so they match no topic. */
	const char *evil[] = {"+", "#", "a+b", "a/b", "/", "x/+", "+/#"};
	for (size_t i = 0; i < sizeof(evil) / sizeof(evil[0]); i++) {
		const char *e = evil[i];
		assert_false(can(a, e, "n", "clients/x/a", R));
		assert_false(can(a, e, "n", "clients/x/a", W));
		assert_false(can(a, e, "n", "clients/x", R));
		assert_false(can(a, e, "n", "clients/a/b/c", R));
		assert_false(can(a, e, "n", "clients/a/b", R));
		assert_false(can(a, e, "n", "clients//", R));
		assert_false(can(a, e, "n", "a/b/own", R));
		assert_false(can(a, e, "n", "x/own", R));
		assert_filter(a, e, "n", "clients/x/#", ACL_FILTER_DENY);
		assert_filter(a, e, "n", "clients/+/#", ACL_FILTER_DENY);
		assert_filter(a, e, "n", "clients/#", ACL_FILTER_DENY);
		assert_filter(a, e, "n", "+/x/#", ACL_FILTER_DENY);
		assert_filter(a, e, "n", "clients/a/b/#", ACL_FILTER_DENY);
		assert_filter(a, e, "n", "+/own", ACL_FILTER_DENY);
		/* The same through the user name. */
		assert_false(can(a, "x", e, "u/x/a", R));
		assert_false(can(a, "x", e, "u/a/b/c", R));
		assert_filter(a, "x", e, "u/#", ACL_FILTER_DENY);
		assert_filter(a, "x", e, "u/+/#", ACL_FILTER_DENY);
		assert_filter(a, "x", e, "u/a/b", ACL_FILTER_DENY);
	}

	/* A client id beginning with '$' at the start of a pattern does not
	 * open the reserved namespace. */
	assert_false(can(a, "$SYS", "n", "$SYS/own", R));
	assert_filter(a, "$SYS", "n", "$SYS/own", ACL_FILTER_DENY);
	/* Inside a topic it is just text. */
	assert_true(can(a, "$x", "n", "clients/$x/a", R));
	acl_free(&a);
}

static void test_acl_deny_precedence(void **state)
{
	/* The same rules in two orders: the answers must not change. */
	const char *texts[] = {
	    "topic readwrite #\n"
	    "topic deny secret/#\n"
	    "pattern deny private/%c\n"
	    "user alice\n"
	    "topic readwrite #\n"
	    "topic deny alice/locked/#\n"
	    "topic read alice/locked/ok\n",

	    "pattern deny private/%c\n"
	    "topic deny secret/#\n"
	    "topic readwrite #\n"
	    "user alice\n"
	    "topic read alice/locked/ok\n"
	    "topic deny alice/locked/#\n"
	    "topic readwrite #\n",
	};
	for (size_t k = 0; k < 2; k++) {
		acl *a = acl_text(texts[k]);
		assert_true(can(a, "c1", NULL, "a/b", R));
		assert_true(can(a, "c1", NULL, "a/b", W));
		assert_false(can(a, "c1", NULL, "secret/x", R));
		assert_false(can(a, "c1", NULL, "secret/x", W));
		assert_false(can(a, "c1", NULL, "secret", R));
		assert_true(can(a, "c1", NULL, "secrets", R));
		assert_false(can(a, "c1", NULL, "private/c1", R));
		assert_true(can(a, "c1", NULL, "private/c2", R));
		assert_false(can(a, "c1", "alice", "alice/locked/ok", R));
		assert_false(can(a, "c1", "alice", "alice/locked", W));
		assert_true(can(a, "c1", "alice", "alice/open", R));
		assert_true(can(a, "c1", "alice", "secret/x", R)); /* anon deny is not hers */
		assert_false(can(a, "c1", "alice", "private/c1", R));
		assert_filter(a, "c1", NULL, "secret/#", ACL_FILTER_DENY);
		assert_filter(a, "c1", NULL, "secret/+/x", ACL_FILTER_DENY);
		assert_filter(a, "c1", NULL, "#", ACL_FILTER_PARTIAL);
		assert_filter(a, "c1", NULL, "public/#", ACL_FILTER_ALLOW);
		assert_filter(a, "c1", NULL, "private/+", ACL_FILTER_PARTIAL);
		assert_filter(a, "c1", NULL, "private/c1", ACL_FILTER_DENY);
		assert_filter(a, "c1", "alice", "alice/locked/+", ACL_FILTER_DENY);
		assert_filter(a, "c1", "alice", "alice/+/ok", ACL_FILTER_PARTIAL);
		acl_free(&a);
	}
}

static void test_acl_default_deny(void **state)
{
	acl *a = acl_text("");
	assert_false(can(a, "c", NULL, "a", R));
	assert_false(can(a, "c", "u", "a", W));
	assert_filter(a, "c", NULL, "#", ACL_FILTER_DENY);
	acl_free(&a);

	a = acl_text("# only comments\n   # and blanks\n\n\t\n");
	assert_false(can(a, "c", NULL, "a", R));
	acl_free(&a);

	a = acl_text("topic read a\n");
	assert_true(can(a, "c", NULL, "a", R));
	assert_false(can(a, "c", NULL, "a", W));
	assert_false(can(a, "c", NULL, "b", R));
	assert_false(can(a, "c", NULL, "a/b", R));
	/* Nonsense arguments are refused rather than trusted. */
	assert_false(can(a, "c", NULL, "a", 0));
	assert_false(can(a, "c", NULL, "a", 4));
	assert_false(can(a, "c", NULL, "a", R | W));
	assert_false(can(a, "c", NULL, "+", R));
	assert_false(can(a, "c", NULL, "", R));
	assert_false(acl_check(NULL, mqtt_str_c("c"), NULL, mqtt_str_c("a"), R));
	assert_int_equal(acl_check_filter(NULL, mqtt_str_c("c"), NULL, mqtt_str_c("a")),
	                 ACL_FILTER_DENY);
	assert_filter(a, "c", NULL, "a/#/b", ACL_FILTER_DENY); /* invalid filter */
	assert_filter(a, "c", NULL, "a+", ACL_FILTER_DENY);
	assert_filter(a, "c", NULL, "", ACL_FILTER_DENY);
	acl_free(&a);

	/* Both accesses at once need a rule granting both. */
	a = acl_text("topic readwrite a\ntopic read b\n");
	assert_true(can(a, "c", NULL, "a", R | W));
	assert_false(can(a, "c", NULL, "b", R | W));
	acl_free(&a);
}

static void test_acl_sys(void **state)
{
	acl *a = acl_text("topic read #\n"
	                  "topic write +/in\n"
	                  "user op\n"
	                  "topic read $SYS/#\n"
	                  "topic read #\n"
	                  "user mon\n"
	                  "topic read $SYS/broker/+\n");

	/* Leading wildcards do not reach '$' topics. */
	assert_true(can(a, "c", NULL, "a/b", R));
	assert_false(can(a, "c", NULL, "$SYS/broker/load", R));
	assert_false(can(a, "c", NULL, "$SYS", R));
	assert_false(can(a, "c", NULL, "$x", R));
	assert_true(can(a, "c", NULL, "x/in", W));
	assert_false(can(a, "c", NULL, "$x/in", W));
	/* '$' later in a topic is ordinary. */
	assert_true(can(a, "c", NULL, "a/$SYS", R));
	/* An explicit '$SYS' rule does. */
	assert_true(can(a, "c", "op", "$SYS/broker/load", R));
	assert_true(can(a, "c", "op", "$SYS", R));
	assert_true(can(a, "c", "mon", "$SYS/broker/load", R));
	assert_false(can(a, "c", "mon", "$SYS/other", R));

	assert_filter(a, "c", NULL, "#", ACL_FILTER_ALLOW);
	assert_filter(a, "c", NULL, "+/+", ACL_FILTER_ALLOW);
	assert_filter(a, "c", NULL, "$SYS/#", ACL_FILTER_DENY);
	assert_filter(a, "c", NULL, "$SYS/broker", ACL_FILTER_DENY);
	assert_filter(a, "c", "op", "$SYS/#", ACL_FILTER_ALLOW);
	assert_filter(a, "c", "op", "#", ACL_FILTER_ALLOW);
	assert_filter(a, "c", "mon", "$SYS/#", ACL_FILTER_PARTIAL);
	assert_filter(a, "c", "mon", "$SYS/broker/+", ACL_FILTER_ALLOW);
	assert_filter(a, "c", "mon", "+/broker/+", ACL_FILTER_DENY);
	assert_filter(a, "c", "mon", "#", ACL_FILTER_DENY);
	acl_free(&a);

	/* A '+' rule neither reaches nor is cut by a '$' filter. */
	a = acl_text("topic read +/x\ntopic deny #\ntopic read $SYS/x\n");
	assert_filter(a, "c", NULL, "$SYS/x", ACL_FILTER_ALLOW);
	assert_true(can(a, "c", NULL, "$SYS/x", R));
	assert_filter(a, "c", NULL, "+/x", ACL_FILTER_DENY);
	acl_free(&a);
}

static void test_acl_filter_table(void **state)
{
	acl *a = acl_text("topic read a/#\n"
	                  "topic read b/+/c\n"
	                  "topic readwrite d/e\n"
	                  "topic write w/#\n"
	                  "topic deny a/secret/#\n"
	                  "topic read x/#\n"
	                  "topic deny x/y\n");
	static const struct {
		const char *filter;
		int want;
	} rows[] = {
	    {"a/b", ACL_FILTER_ALLOW},
	    {"a/b/#", ACL_FILTER_ALLOW},
	    {"a", ACL_FILTER_ALLOW},
	    {"a/#", ACL_FILTER_PARTIAL}, /* covered, but the deny cuts into it */
	    {"a/+", ACL_FILTER_PARTIAL}, /* a/secret is denied */
	    {"a/+/x", ACL_FILTER_PARTIAL},
	    {"a/secret/#", ACL_FILTER_DENY},
	    {"a/secret", ACL_FILTER_DENY},
	    {"a/secret/q", ACL_FILTER_DENY},
	    {"b/x/c", ACL_FILTER_ALLOW},
	    {"b/+/c", ACL_FILTER_ALLOW},
	    {"b/#", ACL_FILTER_PARTIAL},
	    {"b/+/+", ACL_FILTER_PARTIAL},
	    {"b/x/d", ACL_FILTER_DENY},
	    {"b/x", ACL_FILTER_DENY},
	    {"b/x/c/d", ACL_FILTER_DENY},
	    {"b", ACL_FILTER_DENY},
	    {"d/e", ACL_FILTER_ALLOW},
	    {"d/+", ACL_FILTER_PARTIAL},
	    {"d/#", ACL_FILTER_PARTIAL},
	    {"d/e/f", ACL_FILTER_DENY},
	    {"w/x", ACL_FILTER_DENY}, /* write is not read */
	    {"w/#", ACL_FILTER_DENY},
	    {"#", ACL_FILTER_PARTIAL},
	    {"+", ACL_FILTER_PARTIAL}, /* "a" (a/# matches its parent) and "x" */
	    {"+/+/+/+", ACL_FILTER_PARTIAL},
	    {"x/#", ACL_FILTER_PARTIAL},
	    {"x/z", ACL_FILTER_ALLOW},
	    {"x/y", ACL_FILTER_DENY},
	    {"x/y/z", ACL_FILTER_ALLOW},
	    {"x/+", ACL_FILTER_PARTIAL},
	    {"q/#", ACL_FILTER_DENY},
	    {"$SYS/#", ACL_FILTER_DENY},
	    {"a/#/b", ACL_FILTER_DENY},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		assert_filter(a, "c", NULL, rows[i].filter, rows[i].want);
	acl_free(&a);

	/* Single-rule shapes: rule, filter, expected. */
	static const struct {
		const char *rule, *filter;
		int want;
	} pairs[] = {
	    {"#", "#", ACL_FILTER_ALLOW},
	    {"#", "+/+", ACL_FILTER_ALLOW},
	    {"#", "$SYS/#", ACL_FILTER_DENY},
	    {"+/#", "#", ACL_FILTER_ALLOW}, /* same topics exactly */
	    {"+/#", "a/#", ACL_FILTER_ALLOW},
	    {"a/+/#", "a/#", ACL_FILTER_PARTIAL}, /* "a" itself */
	    {"a/#", "a", ACL_FILTER_ALLOW},
	    {"a", "a/#", ACL_FILTER_PARTIAL},
	    {"a", "+", ACL_FILTER_PARTIAL},
	    {"a", "#", ACL_FILTER_PARTIAL},
	    {"+/+", "+", ACL_FILTER_DENY},
	    {"+/+", "#", ACL_FILTER_PARTIAL},
	    {"+/+", "a/+", ACL_FILTER_ALLOW},
	    {"+/+", "a/+/c", ACL_FILTER_DENY},
	    {"+", "+/#", ACL_FILTER_PARTIAL},
	    {"a/+/c", "+/b/+", ACL_FILTER_PARTIAL},
	    {"a/+/c", "a/b/d", ACL_FILTER_DENY},
	    {"/#", "/", ACL_FILTER_ALLOW},
	    {"/#", "+/a", ACL_FILTER_PARTIAL},
	    {"+/", "/", ACL_FILTER_ALLOW}, /* empty levels are levels */
	    {"e/+/f", "e//f", ACL_FILTER_ALLOW},
	    {"$SYS/#", "$SYS", ACL_FILTER_ALLOW},
	    {"$SYS/#", "#", ACL_FILTER_DENY},
	    {"$SYS/#", "+/#", ACL_FILTER_DENY},
	    {"$SYS/+", "$SYS/#", ACL_FILTER_PARTIAL},
	};
	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		char text[128];
		snprintf(text, sizeof(text), "topic read %s\n", pairs[i].rule);
		a = acl_text(text);
		if (filt(a, "c", NULL, pairs[i].filter) != pairs[i].want)
			fail_msg("rule '%s' filter '%s': got %d want %d", pairs[i].rule,
			         pairs[i].filter, filt(a, "c", NULL, pairs[i].filter),
			         pairs[i].want);
		assert_filter(a, "c", NULL, pairs[i].filter, pairs[i].want);
		acl_free(&a);
	}
}

static void test_acl_long_values(void **state)
{
	/* Expansions past the stack buffer take the heap path. */
	size_t n = 3000;
	char *cid = malloc(n + 1), *topic = malloc(n + 64);
	acl *a = acl_text("pattern read clients/%c/#\npattern deny clients/%c/%c/x\n");

	assert_non_null(cid);
	assert_non_null(topic);
	memset(cid, 'k', n);
	cid[n] = '\0';
	snprintf(topic, n + 64, "clients/%s/a", cid);
	assert_true(can(a, cid, NULL, topic, R));
	assert_false(can(a, "k", NULL, topic, R));
	snprintf(topic, n + 64, "clients/%s/#", cid);
	assert_filter(a, cid, NULL, topic, ACL_FILTER_PARTIAL);
	snprintf(topic, n + 64, "clients/%s/a/#", cid);
	assert_filter(a, cid, NULL, topic, ACL_FILTER_ALLOW);
	acl_free(&a);
	free(cid);
	free(topic);
}

static void test_acl_parse(void **state)
{
	static const struct {
		const char *text, *want; /* want NULL: loads */
	} cases[] = {
	    {"topic read a\nfoo bar\n", "t.acl:2: unknown directive 'foo'"},
	    {"Topic read a\n", "t.acl:1: unknown directive"},
	    {"topicread a\n", "t.acl:1: unknown directive"},
	    {"\n\ntopic reed a/b\n", "t.acl:3: bad access word"},
	    {"# x\ntopic readwrite a/b c\ntopic dney x y\n",
	     "t.acl:3: bad access word (read, write, readwrite or deny) 'dney'"},
	    {"topic read a/#/b\n", "t.acl:1: invalid topic filter 'a/#/b'"},
	    {"topic read a+\n", "t.acl:1: invalid topic filter"},
	    {"user x\npattern read a/b#\n", "t.acl:2: invalid topic filter"},
	    {"topic read a\n\xff\xfe\n", "t.acl:2: unknown directive '?"
	                                 "?'"},
	    {"topic read \xc3\x28\n", "t.acl:1: invalid topic filter"},
	    {"user\n", "t.acl:1: user without a name"},
	    {"user   \t \n", "t.acl:1: user without a name"},
	    {"user a\x01\n", "t.acl:1: user name contains a control character"},
	    {"topic\n", "t.acl:1: topic without a topic filter"},
	    {"pattern   \n", "t.acl:1: pattern without a topic filter"},
	    {"topic read a\r\nuser b\r\ntopic write c\r\n", NULL},
	    {"  # indented comment\n\t\n", NULL},
	    {"topic read a b\n", NULL}, /* a filter may contain blanks */
	    {"topic a b\n", "t.acl:1: bad access word (read, write, readwrite or deny) 'a'"},
	};
	char err[512];
	acl *a;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = '\0';
		a = NULL;
		int rc = acl_load_string("t.acl", cases[i].text, strlen(cases[i].text), &a, err,
		                         sizeof(err));
		if (!cases[i].want) {
			if (rc != 0)
				fail_msg("case %zu: %s", i, err);
			acl_free(&a);
			continue;
		}
		if (rc != -1)
			fail_msg("case %zu loaded", i);
		assert_null(a);
		if (strncmp(err, cases[i].want, strlen(cases[i].want)) != 0)
			fail_msg("case %zu: got '%s', want '%s'", i, err, cases[i].want);
	}

	/* A single word after the directive is the filter, as in mosquitto. */
	a = acl_text("topic read\npattern deny\n");
	assert_true(can(a, "c", NULL, "read", R));
	assert_true(can(a, "c", NULL, "read", W));
	assert_true(can(a, "c", NULL, "deny", W)); /* a readwrite pattern "deny" */
	assert_false(can(a, "c", NULL, "x", R));
	acl_free(&a);
	/* With two words or more the rest of the line is the filter. */
	a = acl_text("topic read a b\n");
	assert_true(can(a, "c", NULL, "a b", R));
	assert_false(can(a, "c", NULL, "a", R));
	acl_free(&a);
	/* CRLF lines work as plain ones. */
	a = acl_text("topic read a\r\nuser b\r\ntopic write c\r\n");
	assert_true(can(a, "c", NULL, "a", R));
	assert_true(can(a, "c", "b", "c", W));
	acl_free(&a);
	/* NUL bytes in the text do not end it early. */
	a = NULL;
	assert_int_equal(acl_load_string("t.acl", "topic read a\0x\n", 15, &a, err, sizeof(err)),
	                 -1);
	assert_non_null(strstr(err, "t.acl:1: "));

	/* From a file: errors name the path. */
	write_text(tpath("acl"), "topic read a\n\nuser\n");
	assert_int_equal(acl_load(tpath("acl"), &a, err, sizeof(err)), -1);
	char want[300];
	snprintf(want, sizeof(want), "%s:3: user without a name", tpath("acl"));
	assert_string_equal(err, want);
	write_text(tpath("acl"), "topic read a\nuser u\ntopic read b\n");
	assert_int_equal(acl_load(tpath("acl"), &a, err, sizeof(err)), 0);
	assert_true(can(a, "c", NULL, "a", R));
	assert_true(can(a, "c", "u", "b", R));
	acl_free(&a);
	assert_int_equal(acl_load(tpath("missing-acl"), &a, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "missing-acl"));
	/* Only regular files: a directory (or a device) is refused up front. */
	assert_int_equal(acl_load(g_dir, &a, err, sizeof(err)), -1);
	assert_null(a);
	assert_non_null(strstr(err, "not a regular file"));
	unlink(tpath("acl"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hash_format),
	    cmocka_unit_test(test_check_basic),
	    cmocka_unit_test(test_iterations_honoured),
	    cmocka_unit_test(test_cache),
	    cmocka_unit_test(test_unknown_user_costs_the_same),
	    cmocka_unit_test(test_cache_threads),
	    cmocka_unit_test(test_file_set_delete),
	    cmocka_unit_test(test_load_errors),
	    cmocka_unit_test(test_many_users),
	    cmocka_unit_test(test_acl_anonymous_and_users),
	    cmocka_unit_test(test_acl_patterns),
	    cmocka_unit_test(test_acl_wildcard_injection),
	    cmocka_unit_test(test_acl_deny_precedence),
	    cmocka_unit_test(test_acl_default_deny),
	    cmocka_unit_test(test_acl_sys),
	    cmocka_unit_test(test_acl_filter_table),
	    cmocka_unit_test(test_acl_long_values),
	    cmocka_unit_test(test_acl_parse),
	};
	return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
