/*
 * fuzz_config.c - libFuzzer target for the configuration parser.
 *
 * Design
 * ------
 * Each input is loaded with cfg_load_string() into a fresh registry holding a
 * representative table: a row of every type (with bounds, infinity, secret
 * and required flags), placeholder rows with a set callback, `<x...>` rows
 * including one with four of them (the backtracking worst case), and literal
 * and placeholder rows that compete for the same keys. Then defaults, the
 * required check and cfg_release run, so ASan sees every allocation freed,
 * and the input is also fed to the shared value parsers.
 *
 * Includes read the file system. So that fuzzing cannot read arbitrary files
 * or stall on big directory trees, every input runs with the working
 * directory switched to an empty temporary directory (relative includes find
 * nothing there), and inputs that mention both "include" and a '/' (which
 * could name a path outside it) are skipped. The directory is switched per
 * input and back, not once at start-up, because libFuzzer resolves relative
 * corpus and artifact paths against the working directory.
 */
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"

struct fz {
	bool b;
	int64_t i;
	int64_t inf;
	uint64_t size;
	uint64_t dur;
	char *str;
	char *path;
	int e;
	cfg_addr addr;
	double d;
	char *secret;
	int64_t open;
};

static const char *const choices[] = {"debug", "info", "warning", "error", NULL};

/* Checks that captures are well-formed strings; rejects some values so the error path runs. */
static int on_set(void *target, const char *const *captures, int ncaptures, const cfg_value *value,
                  char *err, size_t errlen)
{
	size_t total = strlen(value->text);
	(void)target;
	if (ncaptures < 0 || ncaptures > CFG_MAX_CAPTURES)
		abort();
	for (int i = 0; i < ncaptures; i++) {
		if (!captures[i] || !captures[i][0])
			abort(); /* placeholders match one or more characters */
		total += strlen(captures[i]);
	}
	if (ncaptures && strcmp(captures[ncaptures - 1], "0") == 0) {
		snprintf(err, errlen, "index 0 of %s is reserved (%zu bytes)", captures[0], total);
		return -1;
	}
	return 0;
}

static const cfg_key keys[] = {
    {"a.bool", CFG_BOOL, "on", 0, 0, NULL, offsetof(struct fz, b), NULL, 0, NULL},
    {"a.int", CFG_INT, "5", -100, 100, NULL, offsetof(struct fz, i), NULL, 0, NULL},
    {"a.inf", CFG_INT, NULL, 0, 1000, NULL, offsetof(struct fz, inf), NULL, CFG_F_INFINITY, NULL},
    {"a.open", CFG_INT, NULL, 0, 0, NULL, offsetof(struct fz, open), NULL, CFG_F_INFINITY, NULL},
    {"a.size", CFG_SIZE, "1MB", 16, 1ll << 30, NULL, offsetof(struct fz, size), NULL,
     CFG_F_INFINITY, NULL},
    {"a.dur", CFG_DURATION, "15s", 0, 0, NULL, offsetof(struct fz, dur), NULL, CFG_F_INFINITY,
     NULL},
    {"a.str", CFG_STRING, "x", 0, 0, NULL, offsetof(struct fz, str), NULL, 0, NULL},
    {"a.path", CFG_PATH, NULL, 0, 0, NULL, offsetof(struct fz, path), NULL, 0, NULL},
    {"a.enum", CFG_ENUM, "info", 0, 0, choices, offsetof(struct fz, e), NULL, 0, NULL},
    {"a.addr", CFG_ADDR, ":1883", 0, 0, NULL, offsetof(struct fz, addr), NULL, 0, NULL},
    {"a.double", CFG_DOUBLE, "0.5", 0, 1, NULL, offsetof(struct fz, d), NULL, 0, NULL},
    {"a.secret", CFG_STRING, NULL, 0, 0, NULL, offsetof(struct fz, secret), NULL,
     CFG_F_SECRET | CFG_F_REQUIRED, NULL},
    {"listener.tcp.<name>.bind", CFG_ADDR, NULL, 0, 0, NULL, 0, on_set, 0, NULL},
    {"listener.tcp.<name>.max_connections", CFG_INT, NULL, 1, 1000000, NULL, 0, on_set,
     CFG_F_INFINITY, NULL},
    {"listener.tcp.default.max_connections", CFG_INT, NULL, 1, 10, NULL, 0, on_set, 0, NULL},
    {"backend.redis.hook.<hookpoint...>.<n>", CFG_STRING, NULL, 0, 0, NULL, 0, on_set, 0, NULL},
    {"backend.redis.hook.client.<event>.<n>", CFG_DURATION, NULL, 0, 0, NULL, 0, on_set, 0, NULL},
    {"m.<a...>.<b...>.<c...>.<d...>.y", CFG_SIZE, NULL, 0, 0, NULL, 0, on_set, 0, NULL},
    {"<top>.x", CFG_ENUM, NULL, 0, 0, choices, 0, on_set, 0, NULL},
};

static int empty_dir = -1; /* an empty directory for relative includes */
static int home_dir = -1;  /* the working directory libFuzzer started in */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char tmpl[] = "/tmp/keepmq-fuzz-config-XXXXXX";
	(void)argc;
	(void)argv;
	if (!mkdtemp(tmpl))
		abort();
	empty_dir = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	home_dir = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (empty_dir < 0 || home_dir < 0)
		abort();
	rmdir(tmpl); /* stays usable (and empty) through the descriptor */
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz fz;
	cfg_errors errs;
	cfg_registry *r = NULL;
	char *text = NULL;

	if (memmem(data, size, "include", 7) && memchr(data, '/', size))
		return 0;
	memset(&fz, 0, sizeof(fz));
	memset(&errs, 0, sizeof(errs));
	r = cfg_registry_new();
	if (!r || cfg_register(r, "Fuzz", NULL, keys, sizeof(keys) / sizeof(keys[0]), &fz) != 0)
		abort();
	if (cfg_apply_defaults(r, &errs) != 0)
		abort();
	if (fchdir(empty_dir) != 0)
		abort();
	cfg_load_string(r, "fuzz.conf", (const char *)data, size, &errs);
	if (fchdir(home_dir) != 0)
		abort();
	cfg_check_required(r, &errs);
	if (errs.n < 0 || errs.n > CFG_MAX_ERRORS)
		abort();
	for (int i = 0; i < errs.n; i++)
		if (strnlen(errs.e[i].msg, CFG_ERR_LEN) == CFG_ERR_LEN)
			abort();

	/* The shared parsers on the raw input, as a string. */
	text = malloc(size + 1);
	if (text) {
		bool b;
		int64_t i;
		uint64_t u;
		cfg_addr a;
		memcpy(text, data, size);
		text[size] = '\0';
		cfg_parse_bool(text, &b);
		cfg_parse_int(text, &i);
		cfg_parse_size(text, &u);
		cfg_parse_duration_ms(text, &u);
		cfg_parse_addr(text, &a);
	}
	free(text);
	cfg_release(r);
	if (fz.str || fz.path || fz.secret)
		abort();
	cfg_registry_free(&r);
	return 0;
}
