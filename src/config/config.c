/*
 * config.c - the table-driven configuration registry (contract in config.h).
 *
 * Design
 * ------
 * The registry is two flat arrays: the registered tables (section, intro,
 * target) and one `struct row` per cfg_key. A row caches what matching needs
 * and would otherwise be re-derived from the name on every line: the name
 * split into segments (literal, `<x>`, `<x...>`), the count of literal
 * characters that ranks competing placeholder rows, and the literal prefix
 * used to discard non-matching rows with one strncmp. Rows refer to their
 * table by index because both arrays grow with realloc.
 *
 * Looking a key up first compares it with every literal row (they always
 * win), then tries the placeholder rows. `<x...>` is matched by backtracking
 * over the key's dot-separated segments, longest span first; a table of
 * (pattern segment, key segment) states already known to fail bounds the
 * work to a polynomial even for hostile keys with many segments, which
 * matters because the parser is fuzzed. The matcher counts its steps in its
 * own state and adds them to a process-wide counter (cfg_match_steps) once
 * per row tried, so tests can check that bound without a clock while the
 * recursion pays for a plain increment, not an atomic one.
 *
 * Loading keeps a small context (struct load): the error list, a count of
 * errors raised by this call (the return value; the list may already hold
 * earlier errors or be full), and the stack of files being read. Each stack
 * frame records the device and inode of its file, so an include cycle is
 * found however the path is spelled (symlinks, "./", absolute vs relative),
 * and the directory that relative includes are resolved against.
 *
 * A line is copied into a private buffer and split in place. Every byte of
 * user text that ends up in an error message goes through show(), which
 * escapes control bytes and quotes and cuts long text, so a hostile file
 * cannot forge log lines. Values of SECRET rows are never passed to show():
 * their messages say "the value" instead.
 *
 * The suggestion for an unknown key is the registered name with the smallest
 * edit distance (optimal string alignment, case-insensitive so that a case
 * slip is caught and named). A placeholder row is compared after its
 * placeholders are filled in with the text of the unknown key that lines up
 * with them, so `listener.tcp.default.max_conections` is one edit away from
 * `listener.tcp.<name>.max_connections`.
 *
 * Everything lives in this one file because the registry internals are
 * shared by the parser, the lookup and the docs writer, and the layer has no
 * private header.
 */
#include "config/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define CFG_MAX_LINE     (64 * 1024)        /* longest line, without its line ending */
#define CFG_MAX_FILE     (16 * 1024 * 1024) /* largest file read */
#define CFG_MAX_DEPTH    16                 /* include nesting below the top file */
#define CFG_MAX_NAME     255                /* longest registered name */
#define CFG_MAX_SEGS     32                 /* segments of a registered name */
#define CFG_MAX_KEY_SEGS 256                /* a key with more never matches a placeholder row */
#define CFG_SUGGEST_KEY  256                /* longest unknown key a suggestion is searched for */
#define CFG_CAND_LEN     1024               /* a filled-in placeholder name for suggestions */
#define SHOW_MAX         80                 /* user text shown in messages, in bytes */
#define SHOW_BUF         (SHOW_MAX * 4 + 8)

static const char bom[3] = {'\xef', '\xbb', '\xbf'};

enum seg_kind { SEG_LIT, SEG_ONE, SEG_MULTI };

struct seg {
	uint16_t off; /* in the row's name; for placeholders the whole "<x>" */
	uint16_t len;
	uint8_t kind; /* enum seg_kind */
	uint8_t cap;  /* placeholder number, for SEG_ONE and SEG_MULTI */
};

struct row {
	const cfg_key *key;
	size_t table; /* index in cfg_registry.tables */
	struct seg seg[CFG_MAX_SEGS];
	int nseg;
	int nplace;        /* placeholders */
	int nmulti;        /* of which `<x...>` */
	int literal_chars; /* characters of the name outside placeholders */
	size_t prefix_len; /* bytes before the first '<' */
	bool set;          /* set by a file, string or cfg_set (not by a default) */
};

struct table {
	const char *section;
	const char *intro;
	void *target;
};

struct cfg_registry {
	struct table *tables;
	size_t ntables;
	size_t tcap;
	struct row *rows;
	size_t nrows;
	size_t rcap;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}
static bool is_blank(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}
/* The placeholder alphabet: [A-Za-z0-9_-]. Not isalnum(): locale-free. */
static bool is_word(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' ||
	       c == '-';
}
static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* Trims blanks at both ends in place; returns the start inside s. */
static char *trim(char *s)
{
	while (is_blank((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n && is_blank((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

/*
 * Formats untrusted text for a message: bytes >= 0x80 (UTF-8) and printable
 * ASCII are copied, quotes, backslashes and control bytes are escaped, and
 * text beyond SHOW_MAX input bytes is cut with "...". Writes into buf (the
 * caller's, at least SHOW_BUF bytes) and returns it.
 */
static const char *show(char *buf, const char *s)
{
	size_t k = 0;
	size_t i;
	for (i = 0; s[i] && i < SHOW_MAX; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			buf[k++] = '\\';
			buf[k++] = (char)c;
		} else if (c < 0x20 || c == 0x7f) {
			k += (size_t)snprintf(buf + k, SHOW_BUF - k, "\\x%02x", c);
		} else {
			buf[k++] = (char)c;
		}
	}
	if (s[i])
		k += (size_t)snprintf(buf + k, SHOW_BUF - k, "...");
	buf[k] = '\0';
	return buf;
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* How much snprintf stored into a buffer of n bytes, given its return value. */
static size_t written(int w, size_t n)
{
	return w < 0 ? 0 : (size_t)w < n ? (size_t)w : n - 1;
}

static void verrorf(cfg_errors *errs, const char *file, int line, const char *key, const char *fmt,
                    va_list ap)
{
	if (!errs)
		return;
	if (errs->n < 0)
		errs->n = 0;
	if (errs->n >= CFG_MAX_ERRORS) {
		errs->dropped++;
		return;
	}
	char *m = errs->e[errs->n++].msg;
	size_t k = 0;
	m[0] = '\0';
	if (file && line > 0)
		k = written(snprintf(m, CFG_ERR_LEN, "%s:%d: ", file, line), CFG_ERR_LEN);
	else if (file)
		k = written(snprintf(m, CFG_ERR_LEN, "%s: ", file), CFG_ERR_LEN);
	if (key)
		k += written(snprintf(m + k, CFG_ERR_LEN - k, "%s: ", key), CFG_ERR_LEN - k);
	vsnprintf(m + k, CFG_ERR_LEN - k, fmt, ap);
}

void cfg_errorf(cfg_errors *errs, const char *file, int line, const char *key, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verrorf(errs, file, line, key, fmt, ap);
	va_end(ap);
}

/* Whether a further error would still be stored (suggestions are skipped if not). */
static bool errs_room(const cfg_errors *errs)
{
	return errs && errs->n < CFG_MAX_ERRORS;
}

/* ------------------------------------------------------------------------ */
/* Value parsers                                                            */
/* ------------------------------------------------------------------------ */

/* Why a number was rejected; the shared parsers fold these into -1. */
enum pv { PV_OK = 0, PV_SYNTAX, PV_RANGE, PV_NEGATIVE };

/* Reads one or more digits at *sp; *ovf tells whether they exceed uint64. */
static int scan_digits(const char **sp, uint64_t *out, bool *ovf)
{
	const char *s = *sp;
	uint64_t v = 0;
	bool o = false;
	if (!is_digit((unsigned char)*s))
		return -1;
	for (; is_digit((unsigned char)*s); s++) {
		unsigned d = (unsigned)(*s - '0');
		if (o || v > (UINT64_MAX - d) / 10)
			o = true;
		else
			v = v * 10 + d;
	}
	*sp = s;
	*out = v;
	*ovf = o;
	return 0;
}

static int parse_int_pv(const char *s, int64_t *out)
{
	const char *p = s;
	bool neg = *p == '-';
	uint64_t u;
	bool ovf;
	if (neg)
		p++;
	if (scan_digits(&p, &u, &ovf) || *p)
		return PV_SYNTAX;
	if (ovf || u > (uint64_t)INT64_MAX + (neg ? 1u : 0u))
		return PV_RANGE;
	if (neg)
		*out = u == (uint64_t)INT64_MAX + 1u ? INT64_MIN : -(int64_t)u;
	else
		*out = (int64_t)u;
	return PV_OK;
}

struct unit {
	const char *name;
	uint64_t mul;
};

static const struct unit size_units[] = {
    {"", 1},
    {"b", 1},
    {"k", 1024ull},
    {"kb", 1024ull},
    {"m", 1024ull * 1024},
    {"mb", 1024ull * 1024},
    {"g", 1024ull * 1024 * 1024},
    {"gb", 1024ull * 1024 * 1024},
    {NULL, 0},
};

static const struct unit duration_units[] = {
    {"", 1000}, /* a bare number is seconds */
    {"ms", 1},
    {"s", 1000},
    {"m", 60ull * 1000},
    {"h", 60ull * 60 * 1000},
    {"d", 24ull * 60 * 60 * 1000},
    {NULL, 0},
};

/* "<digits>[blanks]<unit>" with a case-insensitive unit from the table. */
static int parse_units_pv(const char *s, const struct unit *units, uint64_t *out)
{
	const char *p = s;
	uint64_t n;
	uint64_t mul = 0;
	bool ovf;
	if (*p == '-' && is_digit((unsigned char)p[1]))
		return PV_NEGATIVE;
	if (scan_digits(&p, &n, &ovf))
		return PV_SYNTAX;
	while (*p == ' ' || *p == '\t')
		p++;
	for (const struct unit *u = units; u->name; u++) {
		if (strcasecmp(p, u->name) == 0) {
			mul = u->mul;
			break;
		}
	}
	if (!mul)
		return PV_SYNTAX;
	if (ovf || (n && mul > UINT64_MAX / n))
		return PV_RANGE;
	*out = n * mul;
	return PV_OK;
}

/* A decimal number: [-]digits[.digits][e[+-]digits], digits on at least one side of '.'. */
static int parse_double_pv(const char *s, double *out)
{
	const char *p = s;
	bool digits = false;
	if (*p == '-')
		p++;
	for (; is_digit((unsigned char)*p); p++)
		digits = true;
	if (*p == '.')
		for (p++; is_digit((unsigned char)*p); p++)
			digits = true;
	if (!digits)
		return PV_SYNTAX;
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!is_digit((unsigned char)*p))
			return PV_SYNTAX;
		while (is_digit((unsigned char)*p))
			p++;
	}
	if (*p)
		return PV_SYNTAX;
	double d = strtod(s, NULL);
	if (!isfinite(d))
		return PV_RANGE;
	*out = d;
	return PV_OK;
}

int cfg_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"on", "true", "yes", "1"};
	static const char *const no[] = {"off", "false", "no", "0"};
	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

int cfg_parse_int(const char *s, int64_t *out)
{
	return parse_int_pv(s, out) ? -1 : 0;
}

int cfg_parse_size(const char *s, uint64_t *out)
{
	return parse_units_pv(s, size_units, out) ? -1 : 0;
}

int cfg_parse_duration_ms(const char *s, uint64_t *out)
{
	return parse_units_pv(s, duration_units, out) ? -1 : 0;
}

/* Checks "addr[%zone]" of a bracketed IPv6 host; returns NULL or the reason (static text). */
static const char *check_v6(const char *host, size_t len)
{
	char buf[64];
	unsigned char bin[16];
	memcpy(buf, host, len);
	buf[len] = '\0';
	char *zone = strchr(buf, '%');
	if (zone) {
		*zone++ = '\0';
		if (!*zone)
			return "empty zone after \"%\"";
		for (const char *z = zone; *z; z++)
			if (!is_word((unsigned char)*z) && *z != '.')
				return "invalid character in the zone";
	}
	if (inet_pton(AF_INET6, buf, bin) != 1)
		return "not a valid IPv6 address";
	return NULL;
}

/*
 * Checks an unbracketed host: a host name, or an IPv4 address if it looks like
 * one. Returns NULL or the reason (static text).
 */
static const char *check_host(const char *host, size_t len)
{
	char buf[64];
	unsigned char bin[4];
	bool numeric = true;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)host[i];
		if (!is_word(c) && c != '.')
			return "invalid character in the host";
		if (!is_digit(c) && c != '.')
			numeric = false;
	}
	if (numeric) {
		memcpy(buf, host, len);
		buf[len] = '\0';
		if (inet_pton(AF_INET, buf, bin) != 1)
			return "not a valid IPv4 address";
	}
	return NULL;
}

/* Parses an address; returns NULL and fills *out, or a reason (static text). */
static const char *parse_addr_why(const char *s, cfg_addr *out)
{
	const char *host = NULL;
	size_t hlen = 0;
	const char *port;
	const char *why;
	uint64_t pnum;
	bool ovf;

	if (!*s)
		return "empty address";
	if (*s == '[') {
		const char *rb = strchr(s, ']');
		if (!rb)
			return "missing \"]\" after the IPv6 address";
		host = s + 1;
		hlen = (size_t)(rb - host);
		if (!hlen)
			return "empty IPv6 address";
		if (!rb[1])
			return "missing port (use [v6]:port)";
		if (rb[1] != ':')
			return "expected \":port\" after \"]\"";
		port = rb + 2;
		if (hlen > sizeof(out->host) - 1)
			return "host is longer than 63 bytes";
		if ((why = check_v6(host, hlen)))
			return why;
	} else {
		const char *colon = strchr(s, ':');
		if (!colon) {
			for (const char *p = s; *p; p++)
				if (!is_digit((unsigned char)*p))
					return "missing port (use host:port, :port or port)";
			port = s;
		} else {
			if (strchr(colon + 1, ':'))
				return "an IPv6 address needs brackets, e.g. [::1]:1883";
			host = s;
			hlen = (size_t)(colon - s);
			port = colon + 1;
			if (hlen > sizeof(out->host) - 1)
				return "host is longer than 63 bytes";
			if (hlen && (why = check_host(host, hlen)))
				return why;
		}
	}
	if (!*port)
		return "missing port after \":\"";
	const char *p = port;
	if (scan_digits(&p, &pnum, &ovf) || *p)
		return "the port is not a number";
	if (ovf || pnum > 65535)
		return "the port is above 65535";

	memset(out, 0, sizeof(*out));
	if (hlen) {
		memcpy(out->host, host, hlen);
		out->host[hlen] = '\0';
	} else {
		strcpy(out->host, "0.0.0.0");
	}
	out->port = (uint16_t)pnum;
	out->set = true;
	return NULL;
}

int cfg_parse_addr(const char *s, cfg_addr *out)
{
	cfg_addr a;
	if (parse_addr_why(s, &a))
		return -1;
	*out = a;
	return 0;
}

/*
 * Human forms of sizes and durations, in the syntax the parser accepts. Both
 * write into the caller's buf and return it.
 */
static const char *fmt_size(char *buf, size_t n, uint64_t v)
{
	static const struct unit u[] = {{"GB", 1ull << 30}, {"MB", 1ull << 20}, {"KB", 1ull << 10}};
	for (size_t i = 0; v && i < sizeof(u) / sizeof(u[0]); i++) {
		if (v % u[i].mul == 0) {
			snprintf(buf, n, "%" PRIu64 "%s", v / u[i].mul, u[i].name);
			return buf;
		}
	}
	snprintf(buf, n, "%" PRIu64 "B", v);
	return buf;
}

static const char *fmt_duration(char *buf, size_t n, uint64_t ms)
{
	static const struct unit u[] = {
	    {"d", 86400000ull}, {"h", 3600000ull}, {"m", 60000ull}, {"s", 1000ull}};
	if (!ms) {
		snprintf(buf, n, "0s");
		return buf;
	}
	for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
		if (ms % u[i].mul == 0) {
			snprintf(buf, n, "%" PRIu64 "%s", ms / u[i].mul, u[i].name);
			return buf;
		}
	}
	snprintf(buf, n, "%" PRIu64 "ms", ms);
	return buf;
}

/* ------------------------------------------------------------------------ */
/* Converting a value for a row                                             */
/* ------------------------------------------------------------------------ */

/* min == max == 0 means "no bounds" (config.h); cfg_register checks the rest. */
static bool bounded(const cfg_key *k)
{
	return k->min != 0 || k->max != 0;
}

/* What a value of type t should look like, for messages (static text). */
static const char *type_expect(cfg_type t)
{
	switch (t) {
	case CFG_BOOL:
		return "a boolean (use on/off, true/false, yes/no or 1/0)";
	case CFG_INT:
		return "an integer";
	case CFG_SIZE:
		return "a size (use e.g. 512KB, 1MB)";
	case CFG_DURATION:
		return "a duration (use e.g. 500ms, 15s, 2h)";
	case CFG_ADDR:
		return "an address (use host:port, [v6]:port, :port or port)";
	case CFG_DOUBLE:
		return "a number";
	case CFG_ENUM:
		return "one of the choices";
	default:
		return "a value";
	}
}

/*
 * The value quoted for a message, written into buf (the caller's, SHOW_BUF + 2
 * bytes) and returned; for secrets the static text "the value" instead.
 */
static const char *subject(const cfg_key *k, char *buf, const char *text)
{
	if (k->flags & CFG_F_SECRET)
		return "the value";
	char tmp[SHOW_BUF];
	snprintf(buf, SHOW_BUF + 2, "\"%s\"", show(tmp, text));
	return buf;
}

/* A parsed number in the type's human form, written into the caller's buf and returned. */
static const char *fmt_num(const cfg_key *k, char *buf, size_t n, const cfg_value *v)
{
	switch (k->type) {
	case CFG_SIZE:
		return fmt_size(buf, n, v->v.u);
	case CFG_DURATION:
		return fmt_duration(buf, n, v->v.u);
	case CFG_DOUBLE:
		snprintf(buf, n, "%g", v->v.d);
		return buf;
	default:
		snprintf(buf, n, "%" PRId64, v->v.i);
		return buf;
	}
}

/* A bound in the row's unit, written into the caller's buf and returned. */
static const char *fmt_bound(const cfg_key *k, char *buf, size_t n, int64_t b)
{
	if (k->type == CFG_SIZE)
		return fmt_size(buf, n, b < 0 ? 0 : (uint64_t)b);
	if (k->type == CFG_DURATION)
		return fmt_duration(buf, n, b < 0 ? 0 : (uint64_t)b);
	snprintf(buf, n, "%" PRId64, b);
	return buf;
}

/* Checks v against the row's bounds; returns 0, or -1 with a message. */
static int check_bounds(const cfg_key *k, const cfg_value *v, char *msg, size_t len)
{
	char a[64], b[64];
	int below = 0;
	if (!bounded(k))
		return 0;
	switch (k->type) {
	case CFG_INT:
		below = v->v.i < k->min ? 1 : v->v.i > k->max ? -1 : 0;
		break;
	case CFG_SIZE:
	case CFG_DURATION:
		below = k->min > 0 && v->v.u < (uint64_t)k->min ? 1
		        : v->v.u > (uint64_t)k->max             ? -1
		                                                : 0;
		break;
	case CFG_DOUBLE:
		below = v->v.d < (double)k->min ? 1 : v->v.d > (double)k->max ? -1 : 0;
		break;
	default:
		return 0;
	}
	if (!below)
		return 0;
	snprintf(msg, len, "%s is %s %s",
	         k->flags & CFG_F_SECRET ? "the value" : fmt_num(k, a, sizeof(a), v),
	         below > 0 ? "below the minimum" : "above the maximum",
	         fmt_bound(k, b, sizeof(b), below > 0 ? k->min : k->max));
	return -1;
}

/* Stores the row's "infinity" into v: its max, or the type's largest value when unbounded. */
static void set_infinity(const cfg_key *k, cfg_value *v)
{
	if (k->type == CFG_INT)
		v->v.i = bounded(k) ? k->max : INT64_MAX;
	else
		v->v.u = bounded(k) ? (uint64_t)k->max : UINT64_MAX;
}

/* Lists an ENUM row's choices into buf ("a, b, c"), cut to fit. */
static void list_choices(const cfg_key *k, char *buf, size_t n)
{
	size_t len = 0;
	buf[0] = '\0';
	for (size_t i = 0; k->choices[i] && len + 1 < n; i++) {
		int w = snprintf(buf + len, n - len, "%s%s", i ? ", " : "", k->choices[i]);
		if (w < 0 || (size_t)w >= n - len)
			break;
		len += (size_t)w;
	}
}

/*
 * Parses text (already unquoted) by the row's type into v; v->text points at
 * text (the caller's). Returns 0, or -1 with the reason in msg.
 */
static int convert(const cfg_key *k, const char *text, cfg_value *v, char *msg, size_t len)
{
	char sub[SHOW_BUF + 2];
	int pv = PV_OK;
	const char *why;

	memset(v, 0, sizeof(*v));
	v->type = k->type;
	v->text = text;
	if (k->type == CFG_STRING || k->type == CFG_PATH)
		return 0;
	if (!*text) {
		snprintf(msg, len, "missing value: expected %s", type_expect(k->type));
		return -1;
	}
	switch (k->type) {
	case CFG_BOOL:
		pv = cfg_parse_bool(text, &v->v.b) ? PV_SYNTAX : PV_OK;
		break;
	case CFG_INT:
	case CFG_SIZE:
	case CFG_DURATION:
		if (strcasecmp(text, "infinity") == 0) {
			if (!(k->flags & CFG_F_INFINITY)) {
				snprintf(msg, len, "infinity is not allowed here: expected %s",
				         type_expect(k->type));
				return -1;
			}
			set_infinity(k, v);
			return 0;
		}
		if (k->type == CFG_INT)
			pv = parse_int_pv(text, &v->v.i);
		else
			pv = parse_units_pv(text, k->type == CFG_SIZE ? size_units : duration_units,
			                    &v->v.u);
		break;
	case CFG_DOUBLE:
		pv = parse_double_pv(text, &v->v.d);
		break;
	case CFG_ENUM:
		for (int i = 0; k->choices[i]; i++) {
			if (strcmp(text, k->choices[i]) == 0) {
				v->v.e = i;
				return 0;
			}
		}
		char list[256];
		list_choices(k, list, sizeof(list));
		snprintf(msg, len, "%s is not one of: %s", subject(k, sub, text), list);
		return -1;
	case CFG_ADDR:
		if (!(why = parse_addr_why(text, &v->v.addr)))
			return 0;
		snprintf(msg, len, "%s is not an address (%s)", subject(k, sub, text), why);
		return -1;
	default:
		snprintf(msg, len, "row has an unknown type");
		return -1;
	}
	switch (pv) {
	case PV_OK:
		return check_bounds(k, v, msg, len);
	case PV_NEGATIVE:
		snprintf(msg, len, "%s is not %s: it cannot be negative", subject(k, sub, text),
		         type_expect(k->type));
		return -1;
	case PV_RANGE:
		snprintf(msg, len, "%s is out of range", subject(k, sub, text));
		return -1;
	default:
		snprintf(msg, len, "%s is not %s", subject(k, sub, text), type_expect(k->type));
		return -1;
	}
}

/* ------------------------------------------------------------------------ */
/* Registry                                                                 */
/* ------------------------------------------------------------------------ */

cfg_registry *cfg_registry_new(void)
{
	return calloc(1, sizeof(cfg_registry));
}

void cfg_registry_free(cfg_registry **r)
{
	if (!r || !*r)
		return;
	free((*r)->tables);
	free((*r)->rows);
	free(*r);
	*r = NULL;
}

/*
 * Splits a registered name into segments and fills the row's match data.
 * Returns 0, or -1 with the reason in why.
 */
static int compile_name(const char *name, struct row *row, char *why, size_t n)
{
	size_t len = name ? strlen(name) : 0;
	size_t i = 0;
	if (!len || len > CFG_MAX_NAME) {
		snprintf(why, n, "name is empty or longer than %d bytes", CFG_MAX_NAME);
		return -1;
	}
	row->prefix_len = strcspn(name, "<");
	for (;;) {
		size_t end = i;
		if (row->nseg == CFG_MAX_SEGS) {
			snprintf(why, n, "more than %d segments", CFG_MAX_SEGS);
			return -1;
		}
		struct seg *sg = &row->seg[row->nseg];
		if (name[i] == '<') {
			/* "<x...>" holds dots: the segment ends after the '>'. */
			const char *gt = strchr(name + i, '>');
			end = gt ? (size_t)(gt - name) + 1 : len;
			if (end < len && name[end] != '.') {
				snprintf(why, n,
				         "a placeholder must be a whole segment \"<name>\"");
				return -1;
			}
		} else {
			while (end < len && name[end] != '.')
				end++;
		}
		if (end == i) {
			snprintf(why, n, "empty segment");
			return -1;
		}
		sg->off = (uint16_t)i;
		sg->len = (uint16_t)(end - i);
		if (name[i] == '<') {
			size_t in_end = end - 1; /* the '>' */
			size_t id_end = in_end;
			if (name[in_end] != '>' || in_end == i + 1) {
				snprintf(why, n,
				         "a placeholder must be a whole segment \"<name>\"");
				return -1;
			}
			sg->kind = SEG_ONE;
			if (in_end - i > 3 && memcmp(name + in_end - 3, "...", 3) == 0) {
				sg->kind = SEG_MULTI;
				id_end = in_end - 3;
			}
			if (id_end == i + 1) {
				snprintf(why, n, "a placeholder needs a name");
				return -1;
			}
			for (size_t j = i + 1; j < id_end; j++) {
				if (!is_word((unsigned char)name[j])) {
					snprintf(why, n, "invalid character in a placeholder");
					return -1;
				}
			}
			if (row->nplace == CFG_MAX_CAPTURES) {
				snprintf(why, n, "more than %d placeholders", CFG_MAX_CAPTURES);
				return -1;
			}
			sg->cap = (uint8_t)row->nplace++;
			if (sg->kind == SEG_MULTI)
				row->nmulti++;
		} else {
			sg->kind = SEG_LIT;
			for (size_t j = i; j < end; j++) {
				if (!is_word((unsigned char)name[j])) {
					snprintf(why, n,
					         "invalid character '%c' (names use [A-Za-z0-9_-] "
					         "and dots)",
					         name[j]);
					return -1;
				}
			}
			row->literal_chars += (int)(end - i);
		}
		row->nseg++;
		if (end == len)
			break;
		row->literal_chars++; /* the dot */
		i = end + 1;
		if (i == len) {
			snprintf(why, n, "empty segment");
			return -1;
		}
	}
	return 0;
}

/* Whether two compiled names accept the same keys (placeholder names aside). */
static bool same_shape(const struct row *a, const struct row *b)
{
	if (a->nseg != b->nseg)
		return false;
	for (int i = 0; i < a->nseg; i++) {
		const struct seg *x = &a->seg[i], *y = &b->seg[i];
		if (x->kind != y->kind)
			return false;
		if (x->kind == SEG_LIT &&
		    (x->len != y->len ||
		     memcmp(a->key->name + x->off, b->key->name + y->off, x->len)))
			return false;
	}
	return true;
}

/* Checks a row's type-specific fields; returns 0, or -1 with the reason in why. */
static int check_row(const cfg_key *k, const void *target, char *why, size_t n)
{
	if ((unsigned)k->type > CFG_DOUBLE) {
		snprintf(why, n, "unknown type %d", (int)k->type);
		return -1;
	}
	if (k->type == CFG_ENUM && (!k->choices || !k->choices[0])) {
		snprintf(why, n, "an ENUM row needs choices");
		return -1;
	}
	if (!k->set && !target) {
		snprintf(why, n, "no set callback and no target to store into");
		return -1;
	}
	if ((k->type == CFG_SIZE || k->type == CFG_DURATION) && bounded(k) && k->min < 0) {
		snprintf(why, n, "a negative minimum for an unsigned type");
		return -1;
	}
	if ((k->type == CFG_INT || k->type == CFG_SIZE || k->type == CFG_DURATION ||
	     k->type == CFG_DOUBLE) &&
	    bounded(k) && k->max < k->min) {
		snprintf(why, n, "max is below min (use min = max = 0 for no bounds)");
		return -1;
	}
	return 0;
}

/* Grows *arr (of *cap elements of size sz) to hold need; returns 0 or -1. */
static int grow(void **arr, size_t *cap, size_t need, size_t sz)
{
	if (need <= *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : 16;
	while (nc < need)
		nc *= 2;
	void *p = realloc(*arr, nc * sz);
	if (!p)
		return -1;
	*arr = p;
	*cap = nc;
	return 0;
}

int cfg_register(cfg_registry *r, const char *section, const char *intro, const cfg_key *keys,
                 size_t nkeys, void *target)
{
	char why[160];
	if (!r || (nkeys && !keys))
		return -1;
	if (grow((void **)&r->tables, &r->tcap, r->ntables + 1, sizeof(*r->tables)) ||
	    grow((void **)&r->rows, &r->rcap, r->nrows + nkeys, sizeof(*r->rows))) {
		fprintf(stderr, "config: out of memory registering %s\n",
		        section ? section : "(null)");
		return -1;
	}
	/* Rows are compiled into the spare capacity and committed only if all are valid. */
	for (size_t i = 0; i < nkeys; i++) {
		struct row *row = &r->rows[r->nrows + i];
		const char *name = keys[i].name ? keys[i].name : "(null)";
		memset(row, 0, sizeof(*row));
		row->key = &keys[i];
		row->table = r->ntables;
		if (compile_name(keys[i].name, row, why, sizeof(why)) ||
		    check_row(&keys[i], target, why, sizeof(why))) {
			fprintf(stderr, "config: cannot register \"%s\": %s\n", name, why);
			return -1;
		}
		for (size_t j = 0; j < r->nrows + i; j++) {
			if (same_shape(&r->rows[j], row)) {
				fprintf(stderr,
				        "config: cannot register \"%s\": already registered as "
				        "\"%s\"\n",
				        name, r->rows[j].key->name);
				return -1;
			}
		}
	}
	r->tables[r->ntables].section = section;
	r->tables[r->ntables].intro = intro;
	r->tables[r->ntables].target = target;
	r->ntables++;
	r->nrows += nkeys;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Key lookup                                                               */
/* ------------------------------------------------------------------------ */

struct ksplit {
	int n;
	size_t off[CFG_MAX_KEY_SEGS];
	size_t len[CFG_MAX_KEY_SEGS];
	bool word[CFG_MAX_KEY_SEGS]; /* non-empty and all placeholder characters */
};

/* Splits key at dots; returns 0, or -1 if it has more than CFG_MAX_KEY_SEGS segments. */
static int split_key(const char *key, struct ksplit *ks)
{
	const char *p = key;
	ks->n = 0;
	for (;;) {
		if (ks->n == CFG_MAX_KEY_SEGS)
			return -1;
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		bool w = len > 0;
		for (size_t i = 0; i < len && w; i++)
			w = is_word((unsigned char)p[i]);
		ks->off[ks->n] = (size_t)(p - key);
		ks->len[ks->n] = len;
		ks->word[ks->n] = w;
		ks->n++;
		if (!dot)
			return 0;
		p = dot + 1;
	}
}

struct matcher {
	const struct row *row;
	const char *key;
	const struct ksplit *ks;
	uint8_t *failed; /* [nseg][ks->n + 1] states known to fail; NULL without `<x...>` */
	uint64_t steps;  /* calls of match_from, for cfg_match_steps */
	int cs[CFG_MAX_CAPTURES];
	int ce[CFG_MAX_CAPTURES]; /* capture spans as key segment indices, inclusive */
};

/* Whether pattern segments pi.. match key segments kj..; records capture spans. */
static bool match_from(struct matcher *m, int pi, int kj)
{
	const struct row *row = m->row;
	const struct ksplit *ks = m->ks;
	m->steps++;
	if (pi == row->nseg)
		return kj == ks->n;
	if (kj >= ks->n)
		return false;
	uint8_t *memo = m->failed ? &m->failed[pi * (ks->n + 1) + kj] : NULL;
	if (memo && *memo)
		return false;
	const struct seg *sg = &row->seg[pi];
	bool ok = false;
	switch (sg->kind) {
	case SEG_LIT:
		ok = ks->len[kj] == sg->len &&
		     memcmp(m->key + ks->off[kj], row->key->name + sg->off, sg->len) == 0 &&
		     match_from(m, pi + 1, kj + 1);
		break;
	case SEG_ONE:
		if (ks->word[kj]) {
			m->cs[sg->cap] = m->ce[sg->cap] = kj;
			ok = match_from(m, pi + 1, kj + 1);
		}
		break;
	default: {
		/* Longest span first; leave a key segment for each pattern segment after this one.
		 */
		int last = kj;
		int room = ks->n - (row->nseg - pi);
		if (!ks->word[kj])
			break;
		while (last < room && ks->word[last + 1])
			last++;
		for (int e = last; e >= kj && !ok; e--) {
			m->cs[sg->cap] = kj;
			m->ce[sg->cap] = e;
			ok = match_from(m, pi + 1, e + 1);
		}
	}
	}
	if (!ok && memo)
		*memo = 1;
	return ok;
}

/* Whether placeholder row a beats b: more literal characters, then fewer `<x...>`. */
static bool better(const struct row *a, const struct row *b)
{
	if (a->literal_chars != b->literal_chars)
		return a->literal_chars > b->literal_chars;
	return a->nmulti < b->nmulti;
}

/* Matcher steps of every row lookup has tried (see cfg_match_steps). */
static _Atomic uint64_t match_steps;

uint64_t cfg_match_steps(void)
{
	return atomic_load_explicit(&match_steps, memory_order_relaxed);
}

struct match {
	struct row *row;
	int ncap;
	const char *cap[CFG_MAX_CAPTURES];
	char *buf; /* holds the captures; malloc'd, freed by the caller */
};

/*
 * Finds the row for key. Returns 0 with *m filled (m->buf is the caller's to
 * free), 1 if no row matches, -1 on allocation failure.
 */
static int lookup(cfg_registry *r, const char *key, struct match *m)
{
	struct ksplit ks;
	uint8_t failed[CFG_MAX_SEGS * (CFG_MAX_KEY_SEGS + 1)];
	struct row *best = NULL;
	int cs[CFG_MAX_CAPTURES], ce[CFG_MAX_CAPTURES];

	memset(m, 0, sizeof(*m));
	for (size_t i = 0; i < r->nrows; i++) {
		if (!r->rows[i].nplace && strcmp(r->rows[i].key->name, key) == 0) {
			m->row = &r->rows[i];
			return 0;
		}
	}
	if (split_key(key, &ks))
		return 1;
	for (size_t i = 0; i < r->nrows; i++) {
		struct row *row = &r->rows[i];
		if (!row->nplace || (best && !better(row, best)))
			continue;
		if (row->nseg > ks.n || (!row->nmulti && row->nseg != ks.n) ||
		    strncmp(row->key->name, key, row->prefix_len) != 0)
			continue;
		struct matcher mt = {.row = row, .key = key, .ks = &ks};
		if (row->nmulti) {
			memset(failed, 0, (size_t)row->nseg * (size_t)(ks.n + 1));
			mt.failed = failed;
		}
		bool ok = match_from(&mt, 0, 0);
		atomic_fetch_add_explicit(&match_steps, mt.steps, memory_order_relaxed);
		if (ok) {
			best = row;
			memcpy(cs, mt.cs, sizeof(cs));
			memcpy(ce, mt.ce, sizeof(ce));
		}
	}
	if (!best)
		return 1;

	size_t total = 0;
	for (int c = 0; c < best->nplace; c++)
		total += ks.off[ce[c]] + ks.len[ce[c]] - ks.off[cs[c]] + 1;
	m->buf = malloc(total);
	if (!m->buf)
		return -1;
	char *p = m->buf;
	for (int c = 0; c < best->nplace; c++) {
		size_t len = ks.off[ce[c]] + ks.len[ce[c]] - ks.off[cs[c]];
		memcpy(p, key + ks.off[cs[c]], len);
		p[len] = '\0';
		m->cap[c] = p;
		p += len + 1;
	}
	m->row = best;
	m->ncap = best->nplace;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* "Did you mean" suggestions                                               */
/* ------------------------------------------------------------------------ */

/*
 * Writes the row's name into buf with each placeholder replaced by the part of
 * the key that lines up with it: segments before the first `<x...>` by
 * position from the start, segments after the last one by position from the
 * end, and a single `<x...>` takes what is in between. A placeholder that
 * cannot be lined up stays as written. Returns 0, or -1 if buf is too small.
 */
static int fill_in(const struct row *row, const char *key, const struct ksplit *ks, char *buf,
                   size_t n)
{
	int first = row->nseg, last = -1;
	size_t k = 0;
	for (int pi = 0; pi < row->nseg; pi++) {
		if (row->seg[pi].kind == SEG_MULTI) {
			if (first == row->nseg)
				first = pi;
			last = pi;
		}
	}
	for (int pi = 0; pi < row->nseg; pi++) {
		const struct seg *sg = &row->seg[pi];
		const char *t = row->key->name + sg->off;
		size_t tl = sg->len;
		if (sg->kind != SEG_LIT) {
			int a = -1, b = -1;
			if (pi < first) {
				a = b = pi;
			} else if (pi > last) {
				a = b = ks->n - (row->nseg - pi);
				if (a < pi)
					a = b = -1;
			} else if (row->nmulti == 1) {
				a = pi;
				b = ks->n - (row->nseg - pi);
			}
			if (a >= 0 && b >= a && b < ks->n) {
				t = key + ks->off[a];
				tl = ks->off[b] + ks->len[b] - ks->off[a];
			}
		}
		if (k + tl + 2 > n)
			return -1;
		if (pi)
			buf[k++] = '.';
		memcpy(buf + k, t, tl);
		k += tl;
	}
	buf[k] = '\0';
	return 0;
}

/*
 * Optimal string alignment distance, ignoring ASCII case; lb <= CFG_CAND_LEN.
 * Gives up with max + 1 once every entry of a row exceeds max: entries never
 * shrink from one row to the one after next, so the result would too.
 */
static int distance(const char *a, size_t la, const char *b, size_t lb, int max)
{
	int d[3][CFG_CAND_LEN + 1]; /* rows i-2, i-1 and i of the table */
	for (size_t j = 0; j <= lb; j++)
		d[1][j] = (int)j;
	for (size_t i = 1; i <= la; i++) {
		int *cur = d[(i + 1) % 3], *prev = d[i % 3], *prev2 = d[(i + 2) % 3];
		int row_min = (int)i;
		cur[0] = (int)i;
		for (size_t j = 1; j <= lb; j++) {
			int cost = lower((unsigned char)a[i - 1]) != lower((unsigned char)b[j - 1]);
			int v = prev[j] + 1;
			if (cur[j - 1] + 1 < v)
				v = cur[j - 1] + 1;
			if (prev[j - 1] + cost < v)
				v = prev[j - 1] + cost;
			if (i > 1 && j > 1 &&
			    lower((unsigned char)a[i - 1]) == lower((unsigned char)b[j - 2]) &&
			    lower((unsigned char)a[i - 2]) == lower((unsigned char)b[j - 1]) &&
			    prev2[j - 2] + 1 < v)
				v = prev2[j - 2] + 1;
			cur[j] = v;
			if (v < row_min)
				row_min = v;
		}
		/* A transposition reaches back two rows, so both must be past max. */
		if (row_min > max && i > 1) {
			int prev_min = prev[0];
			for (size_t j = 1; j <= lb; j++)
				if (prev[j] < prev_min)
					prev_min = prev[j];
			if (prev_min > max)
				return max + 1;
		}
	}
	return d[(la + 1) % 3][lb];
}

/* Writes " (did you mean ...)" for an unknown key into out, or "" if nothing is close. */
static void suggest(const cfg_registry *r, const char *key, char *out, size_t n)
{
	struct ksplit ks;
	char cand[CFG_CAND_LEN];
	const struct row *best = NULL;
	int best_d = 0;
	bool best_exact = false; /* the filled-in name equals the key byte for byte */
	size_t lk = strlen(key);

	out[0] = '\0';
	if (lk > CFG_SUGGEST_KEY || split_key(key, &ks))
		return;
	for (size_t i = 0; i < r->nrows; i++) {
		const struct row *row = &r->rows[i];
		if (fill_in(row, key, &ks, cand, sizeof(cand)))
			continue;
		size_t lc = strlen(cand);
		int limit = (int)(lc / 5) > 2 ? (int)(lc / 5) : 2;
		if (limit >= (int)lk)
			limit =
			    (int)lk - 1; /* a one-letter key is not "close" to everything short */
		if (best && best_d - 1 < limit)
			limit = best_d - 1; /* ties keep the earlier row */
		if (limit < 0 || (lc > lk ? lc - lk : lk - lc) > (size_t)limit)
			continue;
		int d = distance(key, lk, cand, lc, limit);
		if (d <= limit) {
			best = row;
			best_d = d;
			best_exact = strcmp(cand, key) == 0;
		}
	}
	if (!best)
		return;
	if (best_d == 0 && !best_exact)
		snprintf(out, n, " (did you mean \"%s\"? keys are case-sensitive)",
		         best->key->name);
	else if (best_d == 0)
		snprintf(
		    out, n,
		    " (did you mean \"%s\"? placeholders match letters, digits, \"_\" and \"-\")",
		    best->key->name);
	else
		snprintf(out, n, " (did you mean \"%s\"?)", best->key->name);
}

/* ------------------------------------------------------------------------ */
/* Applying values                                                          */
/* ------------------------------------------------------------------------ */

struct frame {
	const char *name; /* as shown in messages; the caller's */
	const char *base; /* directory relative includes resolve against ("" = cwd) */
	bool has_id;      /* false for text given to cfg_load_string */
	dev_t dev;
	ino_t ino;
};

struct load {
	cfg_registry *r;
	cfg_errors *errs;
	int nerr;  /* errors raised during this call */
	int depth; /* frames in use */
	struct frame stack[CFG_MAX_DEPTH + 1];
};

static void lerr(struct load *ld, const char *file, int line, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void lerr(struct load *ld, const char *file, int line, const char *key, const char *fmt, ...)
{
	va_list ap;
	ld->nerr++;
	va_start(ap, fmt);
	verrorf(ld->errs, file, line, key, fmt, ap);
	va_end(ap);
}

/* Stores a converted value at the row's offset. Returns 0, or -1 with a message. */
static int store(const struct table *t, const cfg_key *k, const cfg_value *v, char *msg, size_t len)
{
	char *at = (char *)t->target + k->offset;
	switch (k->type) {
	case CFG_BOOL:
		*(bool *)at = v->v.b;
		break;
	case CFG_INT:
		*(int64_t *)at = v->v.i;
		break;
	case CFG_SIZE:
	case CFG_DURATION:
		*(uint64_t *)at = v->v.u;
		break;
	case CFG_STRING:
	case CFG_PATH: {
		char *dup = strdup(v->text);
		if (!dup) {
			snprintf(msg, len, "out of memory");
			return -1;
		}
		free(*(char **)at);
		*(char **)at = dup;
		break;
	}
	case CFG_ENUM:
		*(int *)at = v->v.e;
		break;
	case CFG_ADDR:
		*(cfg_addr *)at = v->v.addr;
		break;
	case CFG_DOUBLE:
		*(double *)at = v->v.d;
		break;
	}
	return 0;
}

/*
 * Converts text (unquoted) for row and hands it to the row's callback or
 * stores it. key is the name as written (for messages). mark: count as set
 * for cfg_check_required (not for defaults).
 */
static void apply(struct load *ld, struct row *row, const char *const *caps, int ncap,
                  const char *key, const char *text, const char *file, int line, bool mark)
{
	const cfg_key *k = row->key;
	const struct table *t = &ld->r->tables[row->table];
	cfg_value v;
	char msg[CFG_ERR_LEN];

	if (convert(k, text, &v, msg, sizeof(msg))) {
		lerr(ld, file, line, key, "%s", msg);
		return;
	}
	if (k->set) {
		msg[0] = '\0';
		v.file = file;
		v.line = line;
		if (k->set(t->target, caps, ncap, &v, msg, sizeof(msg))) {
			msg[sizeof(msg) - 1] = '\0';
			lerr(ld, file, line, key, "%s", msg[0] ? msg : "invalid value");
			return;
		}
	} else if (store(t, k, &v, msg, sizeof(msg))) {
		lerr(ld, file, line, key, "%s", msg);
		return;
	}
	if (mark)
		row->set = true;
}

/* Handles `key = value` (both trimmed, value still quoted; both writable). */
static void set_pair(struct load *ld, const char *file, int line, char *key, char *value)
{
	struct match m;
	char shown[SHOW_BUF];
	char hint[CFG_ERR_LEN];

	if (!*key) {
		lerr(ld, file, line, NULL, "empty key before \"=\"");
		return;
	}
	int rc = lookup(ld->r, key, &m);
	if (rc < 0) {
		lerr(ld, file, line, key, "out of memory");
		return;
	}
	if (rc > 0) {
		hint[0] = '\0';
		if (errs_room(ld->errs))
			suggest(ld->r, key, hint, sizeof(hint));
		lerr(ld, file, line, NULL, "unknown key \"%s\"%s", show(shown, key), hint);
		return;
	}
	size_t vl = strlen(value);
	if (value[0] == '"') {
		if (vl < 2 || value[vl - 1] != '"') {
			lerr(ld, file, line, key,
			     "the value starts with a double quote but does not end with one");
			goto fail;
		}
		value[vl - 1] = '\0';
		value++;
	}
	apply(ld, m.row, m.cap, m.ncap, key, value, file, line, true);
fail:
	free(m.buf);
}

/* ------------------------------------------------------------------------ */
/* Files and includes                                                       */
/* ------------------------------------------------------------------------ */

static int load_text(struct load *ld, const char *file, const char *text, size_t len);

/* Returns the directory part of path with its trailing '/' ("" if none); malloc'd, caller frees. */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) + 1 : 0;
	char *d = malloc(n + 1);
	if (d) {
		memcpy(d, path, n);
		d[n] = '\0';
	}
	return d;
}

/*
 * Reads and parses one file. from/from_line name the include line that asked
 * for it (NULL for the top file); errors opening it are reported there.
 */
static void load_path(struct load *ld, const char *path, const char *from, int from_line)
{
	char shown[SHOW_BUF];
	char *buf = NULL;
	size_t len = 0, cap = 0;
	char *base = NULL;
	const char *why = NULL;
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd < 0 || fstat(fd, &st) != 0)
		why = strerror(errno);
	else if (S_ISDIR(st.st_mode))
		why = strerror(EISDIR);
	if (why) {
		if (from)
			lerr(ld, from, from_line, NULL, "cannot include \"%s\": %s",
			     show(shown, path), why);
		else
			lerr(ld, path, 0, NULL, "cannot read: %s", why);
		goto fail;
	}
	for (int i = 0; i < ld->depth; i++) {
		const struct frame *f = &ld->stack[i];
		if (f->has_id && f->dev == st.st_dev && f->ino == st.st_ino) {
			char chain[CFG_ERR_LEN];
			size_t k = 0;
			chain[0] = '\0';
			for (int j = i; j < ld->depth && k < sizeof(chain); j++)
				k += (size_t)snprintf(chain + k, sizeof(chain) - k, "%s -> ",
				                      show(shown, ld->stack[j].name));
			lerr(ld, from, from_line, NULL, "include cycle: %s%s", chain,
			     show(shown, path));
			goto fail;
		}
	}
	for (;;) {
		if (len == cap) {
			if (cap >= CFG_MAX_FILE + 1) {
				lerr(ld, from ? from : path, from ? from_line : 0, NULL,
				     "\"%s\" is larger than %d MiB", show(shown, path),
				     CFG_MAX_FILE >> 20);
				goto fail;
			}
			cap = cap ? cap * 2 : 8192;
			if (cap > CFG_MAX_FILE + 1)
				cap = CFG_MAX_FILE + 1;
			char *nb = realloc(buf, cap);
			if (!nb) {
				lerr(ld, path, 0, NULL, "out of memory");
				goto fail;
			}
			buf = nb;
		}
		ssize_t got = read(fd, buf + len, cap - len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			lerr(ld, path, 0, NULL, "cannot read: %s", strerror(errno));
			goto fail;
		}
		if (got == 0)
			break;
		len += (size_t)got;
	}
	base = dir_of(path);
	if (!base) {
		lerr(ld, path, 0, NULL, "out of memory");
		goto fail;
	}
	struct frame *f = &ld->stack[ld->depth++];
	f->name = path;
	f->base = base;
	f->has_id = true;
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	load_text(ld, path, buf, len);
	ld->depth--;
fail:
	if (fd >= 0)
		close(fd);
	free(base);
	free(buf);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Copies s into d escaping glob metacharacters, so a base directory is taken literally. */
static size_t glob_escape(char *d, const char *s)
{
	size_t k = 0;
	for (; *s; s++) {
		if (strchr("*?[]\\", *s))
			d[k++] = '\\';
		d[k++] = *s;
	}
	d[k] = '\0';
	return k;
}

/* Handles `include arg` on file:line (arg trimmed and unquoted). */
static void include(struct load *ld, const char *file, int line, const char *arg)
{
	char shown[SHOW_BUF];
	const char *base = ld->depth ? ld->stack[ld->depth - 1].base : "";
	bool is_glob = strpbrk(arg, "*?[") != NULL;
	char *path = NULL;
	glob_t g;

	if (ld->depth > CFG_MAX_DEPTH) {
		lerr(ld, file, line, NULL, "cannot include \"%s\": includes nest more than %d deep",
		     show(shown, arg), CFG_MAX_DEPTH);
		return;
	}
	if (arg[0] == '/')
		base = "";
	path = malloc(2 * strlen(base) + strlen(arg) + 1);
	if (!path) {
		lerr(ld, file, line, NULL, "out of memory");
		return;
	}
	if (!is_glob) {
		strcpy(path, base);
		strcat(path, arg);
		load_path(ld, path, file, line);
		free(path);
		return;
	}
	strcpy(path + glob_escape(path, base), arg);
	memset(&g, 0, sizeof(g));
	int rc = glob(path, 0, NULL, &g);
	if (rc != 0 && rc != GLOB_NOMATCH) {
		lerr(ld, file, line, NULL, "cannot expand \"%s\": %s", show(shown, arg),
		     rc == GLOB_NOSPACE ? "out of memory" : "read error");
	} else if (rc == 0) {
		/* glob() sorts by the locale's collation; the order must not depend on it. */
		qsort(g.gl_pathv, g.gl_pathc, sizeof(char *), cmp_str);
		for (size_t i = 0; i < g.gl_pathc; i++)
			load_path(ld, g.gl_pathv[i], file, line);
	}
	globfree(&g);
	free(path);
}

/* Handles one line (NUL-terminated, writable, without its line ending). */
static void parse_line(struct load *ld, const char *file, int line, char *s)
{
	s = trim(s);
	if (!*s || *s == '#')
		return;
	if (strncmp(s, "include", 7) == 0 && (!s[7] || is_blank((unsigned char)s[7]))) {
		char *arg = trim(s + 7);
		if (*arg != '=') { /* "include = x" sets a key named include */
			size_t n = strlen(arg);
			if (!n) {
				lerr(ld, file, line, NULL, "include needs a file name or glob");
				return;
			}
			if (arg[0] == '"') {
				if (n < 2 || arg[n - 1] != '"') {
					lerr(ld, file, line, NULL,
					     "the include path starts with a double quote but does "
					     "not end with one");
					return;
				}
				arg[n - 1] = '\0';
				arg++;
				if (!*arg) {
					lerr(ld, file, line, NULL,
					     "include needs a file name or glob");
					return;
				}
			}
			include(ld, file, line, arg);
			return;
		}
	}
	char *eq = strchr(s, '=');
	if (!eq) {
		lerr(ld, file, line, NULL, "expected \"key = value\" but the line has no \"=\"");
		return;
	}
	*eq = '\0';
	set_pair(ld, file, line, trim(s), trim(eq + 1));
}

/* Splits text into lines and parses each. Returns 0, or -1 on allocation failure. */
static int load_text(struct load *ld, const char *file, const char *text, size_t len)
{
	const char *p = text;
	const char *end = text + len;
	int line = 0;
	char *buf;

	if (len >= sizeof(bom) && memcmp(text, bom, sizeof(bom)) == 0)
		p += sizeof(bom);
	buf = malloc((len < CFG_MAX_LINE ? len : CFG_MAX_LINE) + 1);
	if (!buf) {
		lerr(ld, file, 0, NULL, "out of memory");
		return -1;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n = (size_t)((nl ? nl : end) - p);
		line++;
		if (n && p[n - 1] == '\r')
			n--;
		if (n > CFG_MAX_LINE) {
			lerr(ld, file, line, NULL, "the line is longer than %d KiB",
			     CFG_MAX_LINE / 1024);
		} else if (memchr(p, '\0', n)) {
			lerr(ld, file, line, NULL, "the line contains a NUL byte");
		} else {
			memcpy(buf, p, n);
			buf[n] = '\0';
			parse_line(ld, file, line, buf);
		}
		p = nl ? nl + 1 : end;
	}
	free(buf);
	return 0;
}

int cfg_load_file(cfg_registry *r, const char *path, cfg_errors *errs)
{
	struct load ld = {.r = r, .errs = errs};
	if (!r || !path)
		return -1;
	load_path(&ld, path, NULL, 0);
	return ld.nerr ? -1 : 0;
}

int cfg_load_string(cfg_registry *r, const char *name, const char *text, size_t len,
                    cfg_errors *errs)
{
	struct load ld = {.r = r, .errs = errs};
	if (!r || (!text && len))
		return -1;
	ld.stack[0].name = name ? name : "<string>";
	ld.stack[0].base = "";
	ld.depth = 1;
	load_text(&ld, ld.stack[0].name, text ? text : "", len);
	return ld.nerr ? -1 : 0;
}

int cfg_set(cfg_registry *r, const char *key, const char *value, const char *file, int line,
            cfg_errors *errs)
{
	struct load ld = {.r = r, .errs = errs};
	char *k = NULL, *v = NULL;
	if (!r)
		return -1;
	k = strdup(key ? key : "");
	v = strdup(value ? value : "");
	if (!k || !v) {
		lerr(&ld, file, line, NULL, "out of memory");
		goto fail;
	}
	set_pair(&ld, file, line, trim(k), trim(v));
fail:
	free(k);
	free(v);
	return ld.nerr ? -1 : 0;
}

int cfg_apply_defaults(cfg_registry *r, cfg_errors *errs)
{
	struct load ld = {.r = r, .errs = errs};
	if (!r)
		return -1;
	for (size_t i = 0; i < r->nrows; i++) {
		struct row *row = &r->rows[i];
		if (!row->nplace && row->key->def)
			apply(&ld, row, NULL, 0, row->key->name, row->key->def, "<default>", 0,
			      false);
	}
	return ld.nerr ? -1 : 0;
}

int cfg_check_required(cfg_registry *r, cfg_errors *errs)
{
	int n = 0;
	if (!r)
		return -1;
	for (size_t i = 0; i < r->nrows; i++) {
		const struct row *row = &r->rows[i];
		if ((row->key->flags & CFG_F_REQUIRED) && !row->set) {
			cfg_errorf(errs, NULL, 0, row->key->name, "required key is not set");
			n++;
		}
	}
	return n ? -1 : 0;
}

void cfg_release(cfg_registry *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->nrows; i++) {
		const cfg_key *k = r->rows[i].key;
		if (k->set || (k->type != CFG_STRING && k->type != CFG_PATH))
			continue;
		char **slot = (char **)((char *)r->tables[r->rows[i].table].target + k->offset);
		free(*slot);
		*slot = NULL;
	}
}

/* ------------------------------------------------------------------------ */
/* Documentation                                                            */
/* ------------------------------------------------------------------------ */

static const char docs_preamble[] =
    "# Configuration reference\n"
    "\n"
    "<!-- Generated by cfg_write_docs() from the key tables in the source code.\n"
    "     Edit the tables, not this file. -->\n"
    "\n"
    "keepmq reads its settings from a text file of `key = value` lines. Every key it\n"
    "accepts is listed below, grouped by the part of the broker that uses it, with its\n"
    "type, default and allowed values.\n"
    "\n"
    "## File format\n"
    "\n"
    "- One setting per line: `key = value`. Blanks around the key and the value are\n"
    "  ignored; the value is everything after the first `=`, so it may itself contain `=`.\n"
    "- A line whose first non-blank character is `#` is a comment. There are no comments\n"
    "  at the end of a line: a `#` after a value is part of the value (topic filters such\n"
    "  as `a/#` need it).\n"
    "- A value may be wrapped in double quotes, which are removed: `\"  padded \"` keeps\n"
    "  its blanks. Only the outer pair is removed.\n"
    "- Keys are case-sensitive. An unknown key is an error, and the message names the\n"
    "  closest known key.\n"
    "- When a key is set more than once, the last setting wins, so an included file can\n"
    "  override what came before it.\n"
    "- `include <path>` reads another file at that point. A relative path is relative to\n"
    "  the directory of the file that contains the `include`. The path may be a glob\n"
    "  (`include conf.d/*.conf`): the matching files are read in sorted order, and a glob\n"
    "  that matches nothing is not an error, while a plain path that does not exist is.\n"
    "  Includes nest at most 16 deep, and a file that includes itself, directly or\n"
    "  through others, is an error.\n"
    "- Files are UTF-8; a byte order mark at the start is ignored, lines may end in CRLF,\n"
    "  and a line may be at most 64 KiB long.\n"
    "- All errors in a file are reported together, each as `file:line: key: message`.\n"
    "\n"
    "## Value types\n"
    "\n"
    "| Type | Syntax | Examples |\n"
    "| --- | --- | --- |\n"
    "| boolean | `on`/`off`, `true`/`false`, `yes`/`no`, `1`/`0`, in any case | `on` |\n"
    "| integer | decimal, with an optional leading `-` | `100`, `-1` |\n"
    "| size | a whole number of bytes with an optional unit `B`, `KB` (or `K`), `MB` (`M`) "
    "or `GB` (`G`), in any case; 1 KB is 1024 bytes | `512KB`, `1MB`, `64` |\n"
    "| duration | a whole number with a unit `ms`, `s`, `m` (minutes), `h` or `d`; a bare "
    "number is seconds | `500ms`, `15s`, `2h` |\n"
    "| string | any text | `keepmq` |\n"
    "| path | a file or directory name; a relative path is relative to the directory keepmq "
    "was started in | `/var/lib/keepmq` |\n"
    "| enum | one of the words listed for the key, exactly as written | |\n"
    "| address | `host:port`, `[IPv6]:port`, `:port` or `port`; without a host, `0.0.0.0` "
    "(all IPv4 interfaces); the host is at most 63 bytes | `127.0.0.1:1883`, `[::]:8883`, "
    "`1883` |\n"
    "| number | a decimal number, with optional fraction and exponent | `0.75`, `1e-3` |\n"
    "\n"
    "Where a key's range says so, `infinity` is accepted in place of a number and means\n"
    "the largest value the key allows.\n"
    "\n"
    "## Placeholders\n"
    "\n"
    "A key with a part in angle brackets stands for a family of keys. In\n"
    "`listener.tcp.<name>.bind`, replace `<name>` with a word of your choice made of\n"
    "letters, digits, `_` and `-`, for example `listener.tcp.default.bind`; the same word\n"
    "in several keys configures the same thing. A placeholder written with three dots,\n"
    "such as `<hookpoint...>`, may be several such words joined by dots\n"
    "(`client.connected`).\n"
    "\n";

/* A GitHub-style heading anchor: lower case, blanks to '-', punctuation dropped. */
static void md_anchor(FILE *out, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == ' ')
			fputc('-', out);
		else if (is_word(c) || c >= 0x80)
			fputc(lower(c), out);
	}
}

/* Writes text as inline code, with a longer fence if it contains a backtick. */
static void md_code(FILE *out, const char *s)
{
	if (strchr(s, '`'))
		fprintf(out, "`` %s ``", s);
	else
		fprintf(out, "`%s`", s);
}

/* The name of a type in the docs (static text). */
static const char *type_doc(cfg_type t)
{
	static const char *const names[] = {
	    [CFG_BOOL] = "boolean",      [CFG_INT] = "integer",   [CFG_SIZE] = "size",
	    [CFG_DURATION] = "duration", [CFG_STRING] = "string", [CFG_PATH] = "path",
	    [CFG_ENUM] = "enum",         [CFG_ADDR] = "address",  [CFG_DOUBLE] = "number",
	};
	return (unsigned)t <= CFG_DOUBLE ? names[t] : "?";
}

/* Writes the "Range" item of a numeric row, if it has bounds or takes infinity. */
static void md_range(FILE *out, const cfg_key *k)
{
	char a[64], b[64];
	bool inf = (k->flags & CFG_F_INFINITY) &&
	           (k->type == CFG_INT || k->type == CFG_SIZE || k->type == CFG_DURATION);
	bool open_max = !bounded(k) || k->max == INT64_MAX;
	if (k->type != CFG_INT && k->type != CFG_SIZE && k->type != CFG_DURATION &&
	    k->type != CFG_DOUBLE)
		return;
	if (!bounded(k) && !inf)
		return;
	if (k->type == CFG_DOUBLE) {
		snprintf(a, sizeof(a), "%" PRId64, k->min);
		snprintf(b, sizeof(b), "%" PRId64, k->max);
	} else {
		fmt_bound(k, a, sizeof(a), k->min);
		fmt_bound(k, b, sizeof(b), k->max);
	}
	fputs("- **Range:** ", out);
	if (!bounded(k))
		fputs("any", out);
	else if (k->max == INT64_MAX)
		fprintf(out, "at least `%s`", a);
	else
		fprintf(out, "`%s` to `%s`", a, b);
	if (inf && open_max)
		fputs(", or `infinity` for no limit", out);
	else if (inf)
		fprintf(out, ", or `infinity` (the same as `%s`)", b);
	fputs("\n", out);
}

static void md_row(FILE *out, const cfg_key *k)
{
	fputs("### ", out);
	md_code(out, k->name);
	fputs("\n\n", out);
	fprintf(out, "- **Type:** [%s](#value-types)\n", type_doc(k->type));
	if (k->type == CFG_ENUM) {
		fputs("- **Values:** ", out);
		for (size_t i = 0; k->choices[i]; i++) {
			fputs(i ? ", " : "", out);
			md_code(out, k->choices[i]);
		}
		fputs("\n", out);
	}
	fputs("- **Default:** ", out);
	if (k->def && (k->flags & CFG_F_SECRET))
		fputs("set, not shown (secret)", out);
	else if (k->def && !*k->def)
		fputs("empty", out);
	else if (k->def)
		md_code(out, k->def);
	else if (k->flags & CFG_F_REQUIRED)
		fputs("none; this key must be set", out);
	else
		fputs("none", out);
	fputs("\n", out);
	md_range(out, k);
	if (k->flags & CFG_F_REQUIRED)
		fputs("- **Required.**\n", out);
	if (k->flags & CFG_F_SECRET)
		fputs("- **Secret:** the value is never shown in messages.\n", out);
	fputs("\n", out);
	if (k->help && *k->help)
		fprintf(out, "%s\n\n", k->help);
}

/* Whether section s has a row that goes into the docs. */
static bool section_visible(const cfg_registry *r, const char *s)
{
	for (size_t i = 0; i < r->nrows; i++) {
		const char *rs = r->tables[r->rows[i].table].section;
		if (!(r->rows[i].key->flags & CFG_F_HIDDEN) &&
		    (rs == s || (rs && s && !strcmp(rs, s))))
			return true;
	}
	return false;
}

/* Whether an earlier table than i has the same section (it was written with that one). */
static bool section_seen(const cfg_registry *r, size_t i)
{
	const char *s = r->tables[i].section;
	for (size_t j = 0; j < i; j++) {
		const char *t = r->tables[j].section;
		if (t == s || (t && s && !strcmp(t, s)))
			return true;
	}
	return false;
}

int cfg_write_docs(cfg_registry *r, FILE *out)
{
	if (!r || !out)
		return -1;
	fputs(docs_preamble, out);
	fputs("## Contents\n\n", out);
	for (size_t i = 0; i < r->ntables; i++) {
		const char *s = r->tables[i].section ? r->tables[i].section : "Other";
		if (section_seen(r, i) || !section_visible(r, r->tables[i].section))
			continue;
		fprintf(out, "- [%s](#", s);
		md_anchor(out, s);
		fputs(")\n", out);
	}
	fputs("\n", out);
	for (size_t i = 0; i < r->ntables; i++) {
		const char *sec = r->tables[i].section;
		if (section_seen(r, i) || !section_visible(r, sec))
			continue;
		fprintf(out, "## %s\n\n", sec ? sec : "Other");
		/* All tables of this section, in registration order, under one heading. */
		for (size_t j = i; j < r->ntables; j++) {
			const char *t = r->tables[j].section;
			if (!(t == sec || (t && sec && !strcmp(t, sec))))
				continue;
			if (r->tables[j].intro && *r->tables[j].intro)
				fprintf(out, "%s\n\n", r->tables[j].intro);
			for (size_t k = 0; k < r->nrows; k++)
				if (r->rows[k].table == j &&
				    !(r->rows[k].key->flags & CFG_F_HIDDEN))
					md_row(out, r->rows[k].key);
		}
	}
	fflush(out);
	return ferror(out) ? -1 : 0;
}
