/*
 * config.h - table-driven configuration.
 *
 * Design
 * ------
 * Every module declares the keys it owns in a static table of cfg_key rows
 * (name, type, default, bounds, where the value is stored, help text) and
 * registers it with a cfg_registry together with the struct the values go
 * into - the way redis declares static_configs[]. The parser knows nothing
 * about any particular key: it reads `key = value` lines, finds the row, and
 * converts and range-checks the value by the row's type. The same table
 * generates docs/configuration.md (cfg_write_docs), so the documentation
 * cannot drift from the code.
 *
 * File syntax (the EMQ X / cuttlefish style the spec's examples use):
 *   - `key = value`; whitespace around key and value is trimmed; the value
 *     is everything after the first '=' (so JSON values may contain '=').
 *   - a line whose first non-blank character is '#' is a comment; there are
 *     no trailing comments (values may legitimately contain '#', e.g. "a/#").
 *   - `include <path-or-glob>` reads other files; relative paths are relative
 *     to the directory of the including file; a glob that matches nothing is
 *     fine, a plain path that does not exist is an error; files matched by a
 *     glob are read in sorted order; includes nest at most 16 deep and a file
 *     including itself (directly or not) is an error.
 *   - a key set twice: the later line wins (so an included override file works).
 *   - values may be wrapped in double quotes, which are removed ("a b" -> a b).
 *
 * Key names: a row's name is literal except for placeholders in angle
 * brackets. `<x>` matches one dot-free segment of [A-Za-z0-9_-]+;
 * `<x...>` matches one or more segments and may contain dots (the hook point
 * in `backend.redis.hook.<hookpoint...>.<n>` is "client.connected"). When
 * several rows match, a row without placeholders wins, then the row with the
 * most literal characters. The matched placeholder texts ("captures") are
 * passed to the row's set callback.
 *
 * Values by type:
 *   BOOL      on|off|true|false|yes|no|1|0 (case-insensitive)           -> bool
 *   INT       decimal, optional leading '-', range [min,max]            -> int64_t
 *   SIZE      integer with optional B|KB|MB|GB (1024-based, case-insensitive,
 *             "1MB", "512KB", "64") in [min,max] bytes                  -> uint64_t
 *   DURATION  integer with unit ms|s|m|h|d ("15s", "2h"; bare number = s),
 *             in [min,max] milliseconds                                 -> uint64_t (ms)
 *   STRING    any text                                                  -> char * (malloc'd)
 *   PATH      like STRING; relative paths are kept as written (they are
 *             relative to the working directory of keepmq)              -> char *
 *   ENUM      one of `choices` (case-sensitive)                         -> int (index)
 *   ADDR      "host:port", "[v6]:port", ":port" or "port"; host defaults to
 *             0.0.0.0; port 0..65535                                    -> cfg_addr
 *   DOUBLE    decimal number in [min,max] (bounds as integers)          -> double
 * The literal value `infinity` is accepted for INT/SIZE/DURATION rows flagged
 * CFG_F_INFINITY, and stores the row's max.
 *
 * Ownership: strings stored into targets are malloc'd by the registry and
 * freed by cfg_release() (or replaced - and the old one freed - when a key is
 * set twice). Targets must be zero-initialised before registration.
 *
 * Errors are collected (up to CFG_MAX_ERRORS) rather than stopping at the
 * first, each naming file, line and key, e.g.
 *   etc/keepmq.conf:12: mqtt.max_packet_size: "1XB" is not a size (use e.g. 512KB, 1MB)
 *   etc/keepmq.conf:3: unknown key "mqtt.max_pakcet_size" (did you mean "mqtt.max_packet_size"?)
 */
#ifndef KEEPMQ_CONFIG_H
#define KEEPMQ_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum cfg_type {
	CFG_BOOL,
	CFG_INT,
	CFG_SIZE,
	CFG_DURATION,
	CFG_STRING,
	CFG_PATH,
	CFG_ENUM,
	CFG_ADDR,
	CFG_DOUBLE,
} cfg_type;

typedef struct cfg_addr {
	char host[64]; /* numeric IPv4/IPv6 or a host name, without brackets */
	uint16_t port;
	bool set;      /* false until a value (or default) was applied */
} cfg_addr;

/* A parsed value as handed to set callbacks. */
typedef struct cfg_value {
	cfg_type type;
	const char *text; /* the raw text after quote removal */
	const char *file; /* where it was set, for callbacks that report errors */
	int line;         /* later (cross-key checks); valid during the call only */
	union {
		bool b;
		int64_t i;
		uint64_t u; /* SIZE (bytes), DURATION (ms) */
		double d;
		int e; /* ENUM index */
		cfg_addr addr;
	} v;
} cfg_value;

#define CFG_MAX_CAPTURES 4
#define CFG_MAX_ERRORS 32
#define CFG_ERR_LEN 512

enum cfg_flags {
	CFG_F_INFINITY = 1u << 0, /* "infinity" allowed; stores max */
	CFG_F_REQUIRED = 1u << 1, /* must be set (no default) - checked by cfg_check_required */
	CFG_F_HIDDEN = 1u << 2,   /* left out of generated docs (tests, internals) */
	CFG_F_SECRET = 1u << 3,   /* never echoed in errors or dumps */
};

/*
 * Set callback for rows whose storage is not a fixed offset (placeholders,
 * lists, validation across keys). `target` is the pointer given at
 * registration, `captures` the placeholder texts in order (NUL-terminated).
 * Return 0, or -1 with a message (without file/line/key: the registry adds
 * them) in err.
 */
typedef int (*cfg_set_fn)(void *target, const char *const *captures, int ncaptures,
                          const cfg_value *value, char *err, size_t errlen);

typedef struct cfg_key {
	const char *name;
	cfg_type type;
	const char *def; /* default in text form, parsed like a file value; NULL: none */
	int64_t min;     /* INT/SIZE/DURATION(ms)/DOUBLE bounds, inclusive */
	int64_t max;     /* min == max == 0: no bounds ("infinity" then stores the type's maximum) */
	const char *const *choices; /* ENUM: NULL-terminated */
	size_t offset;   /* where in target the value goes, when set == NULL */
	cfg_set_fn set;  /* overrides offset storage when non-NULL */
	unsigned flags;  /* enum cfg_flags */
	const char *help; /* one or more sentences, Markdown allowed */
} cfg_key;

typedef struct cfg_error {
	char msg[CFG_ERR_LEN]; /* "file:line: key: message" */
} cfg_error;

typedef struct cfg_errors {
	cfg_error e[CFG_MAX_ERRORS];
	int n;       /* stored messages */
	int dropped; /* further errors not stored */
} cfg_errors;

typedef struct cfg_registry cfg_registry;

/* Returns a new registry or NULL on allocation failure. Free with cfg_registry_free. */
cfg_registry *cfg_registry_new(void);
/* Frees the registry (not the targets' strings: see cfg_release). Sets *r = NULL. */
void cfg_registry_free(cfg_registry **r);

/*
 * Registers a module's table. `section` is the doc heading ("MQTT", "Logging").
 * keys and target must outlive the registry. Returns 0, or -1 if a name is
 * malformed or already registered (a programming error: message on stderr).
 */
int cfg_register(cfg_registry *r, const char *section, const char *intro,
                 const cfg_key *keys, size_t nkeys, void *target);

/* Applies every row's default (rows without placeholders only). Errors in
 * defaults are programming errors and are reported like file errors with
 * file "<default>". Returns 0 if no error. */
int cfg_apply_defaults(cfg_registry *r, cfg_errors *errs);

/* Reads a file (and its includes). Returns 0 if no error was found. */
int cfg_load_file(cfg_registry *r, const char *path, cfg_errors *errs);

/* Parses a whole configuration given as text (tests, fuzzing). `name` is used
 * as the file name in messages; includes are resolved against the cwd. */
int cfg_load_string(cfg_registry *r, const char *name, const char *text, size_t len,
                    cfg_errors *errs);

/* Sets one key as if read from file:line (command-line overrides use file "<command line>"). */
int cfg_set(cfg_registry *r, const char *key, const char *value, const char *file, int line,
            cfg_errors *errs);

/* Reports every CFG_F_REQUIRED row that was never set. Returns 0 if none. */
int cfg_check_required(cfg_registry *r, cfg_errors *errs);

/* Frees every string the registry stored into targets and zeroes those fields. */
void cfg_release(cfg_registry *r);

/* Writes the Markdown reference of every registered row (docs/configuration.md). */
int cfg_write_docs(cfg_registry *r, FILE *out);

/* Adds a formatted error to errs ("file:line: key: msg"); file/key may be NULL. */
void cfg_errorf(cfg_errors *errs, const char *file, int line, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Value parsers shared with other modules (JSON rule options use the same
 * size and duration syntax). Return 0 on success, -1 if malformed. */
int cfg_parse_bool(const char *s, bool *out);
int cfg_parse_int(const char *s, int64_t *out);
int cfg_parse_size(const char *s, uint64_t *out);
int cfg_parse_duration_ms(const char *s, uint64_t *out);
int cfg_parse_addr(const char *s, cfg_addr *out);

/*
 * Diagnostic for tests: the process-wide, cumulative number of steps the
 * placeholder matcher has taken, a step being one visit of a (pattern
 * segment, key segment) state, visits answered by the failure memo included.
 * It measures the work a key costs independently of machine speed, so a test
 * can bound the matching of hostile keys exactly instead of timing it.
 * Atomic and monotonic; take differences.
 */
uint64_t cfg_match_steps(void);

#endif /* KEEPMQ_CONFIG_H */
