/*
 * acl.c - the ACL file (mosquitto format) and access checks.
 *
 * Design
 * ------
 * Loading turns the file into three kinds of rule list: the anonymous list
 * (`topic` lines before any `user` line), one list per user (merged when a
 * user has several sections), and the global `pattern` list. Each list keeps
 * its deny rules first, so a check scans the deny rules, then the granting
 * rules, and can stop at the first granting match. The users are sorted by
 * name and found by binary search. The structure never changes after
 * loading, so checks need no locks.
 *
 * Matching a topic name against a rule is the codec's mqtt_topic_matches(),
 * so ACL rules and subscriptions agree on what a filter means (including
 * that a leading wildcard does not match a topic beginning with '$').
 *
 * Substitution. In a `pattern` rule %c and %u are replaced by the client id
 * and the user name. The substituted text is literal: it never acts as a
 * wildcard or as a level separator. A value containing '+', '#' or '/' can
 * therefore never equal one level of a valid topic name, so a rule whose
 * value contains one of them matches nothing for that client and is simply
 * skipped; that is the literal comparison without comparing. Likewise a
 * value beginning with '$' substituted at the very start of a rule would
 * put the client inside the reserved '$' namespace that no wildcard reaches,
 * which the operator never granted, so such a rule is skipped too.
 * The expansion is built in a stack buffer; only an expansion longer than
 * that buffer falls back to the heap, and if that allocation fails a deny
 * rule counts as matching and a granting rule as not matching (fail closed).
 *
 * Subscription filters. acl_check_filter() compares two filters level by
 * level: a rule R "covers" a filter F when every topic F matches is matched
 * by R, and "intersects" F when some topic is matched by both. Both are
 * decided exactly for a single rule (with the '$' rule at the first level);
 * the classification only uses single rules, so a filter that a union of
 * rules would cover comes out PARTIAL, which is safe: the broker then asks
 * acl_check() for each message.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth/auth.h"

#define RULE_DENY    0 /* access bits of a deny rule: grants nothing */
#define SUBST_C      1
#define SUBST_U      2
#define FILTER_MAX   65535u
#define ACL_FILE_MAX (64u << 20)
#define EXPAND_STACK 512 /* covers nearly every real expansion */

struct acl_rule {
	uint8_t *filter; /* owned, not NUL-terminated */
	uint32_t len;
	uint8_t access; /* ACL_READ | ACL_WRITE, or RULE_DENY */
	uint8_t subst;  /* SUBST_C | SUBST_U: which values a pattern uses */
};

struct rule_list {
	struct acl_rule *r; /* owned; deny rules first once loading finished */
	size_t n, cap;
	size_t ndeny;
};

struct acl_user {
	uint8_t *name; /* owned */
	size_t len;
	struct rule_list rules;
};

struct acl {
	struct rule_list anon;
	struct rule_list patterns;
	struct acl_user *users; /* owned; sorted by name, unique, once loaded */
	size_t nusers, capusers;
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

/* Copies at most 40 bytes of file text for a message, with '?' for non-printables. */
static const char *quote(char out[48], const char *s, size_t len)
{
	size_t n = len > 40 ? 40 : len, i;

	for (i = 0; i < n; i++)
		out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (len > n) {
		memcpy(out + i, "...", 3);
		i += 3;
	}
	out[i] = '\0';
	return out;
}

/* ---------------------------------------------------------------- loading */

static void list_free(struct rule_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->r[i].filter);
	free(l->r);
	memset(l, 0, sizeof(*l));
}

/* Appends a rule; the list takes ownership of filter only on success. */
static int list_add(struct rule_list *l, uint8_t *filter, uint32_t len, uint8_t access,
                    uint8_t subst)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		struct acl_rule *nr = realloc(l->r, cap * sizeof(*nr));
		if (!nr)
			return -1;
		l->r = nr;
		l->cap = cap;
	}
	l->r[l->n++] = (struct acl_rule){filter, len, access, subst};
	return 0;
}

/* Appends all of src's rules to dst and empties src (which keeps no memory). */
static int list_move(struct rule_list *dst, struct rule_list *src)
{
	for (size_t i = 0; i < src->n; i++) {
		struct acl_rule *r = &src->r[i];
		if (list_add(dst, r->filter, r->len, r->access, r->subst) != 0)
			return -1;
		r->filter = NULL;
	}
	list_free(src);
	return 0;
}

/* Puts deny rules first so checks can handle them in one early pass. */
static void list_partition(struct rule_list *l)
{
	size_t d = 0;

	for (size_t i = 0; i < l->n; i++) {
		if (l->r[i].access == RULE_DENY) {
			struct acl_rule t = l->r[d];
			l->r[d] = l->r[i];
			l->r[i] = t;
			d++;
		}
	}
	l->ndeny = d;
}

static int name_cmp(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int c = n ? memcmp(a, b, n) : 0;

	if (c)
		return c;
	return (alen > blen) - (alen < blen);
}

static int user_cmp(const void *x, const void *y)
{
	const struct acl_user *a = x, *b = y;
	return name_cmp(a->name, a->len, b->name, b->len);
}

/* Sorts the users, merges the sections of a user named twice, orders rules. */
static int finish(acl *a)
{
	size_t w = 0;

	if (a->nusers > 1)
		qsort(a->users, a->nusers, sizeof(*a->users), user_cmp);
	for (size_t i = 0; i < a->nusers; i++) {
		if (w > 0 && user_cmp(&a->users[w - 1], &a->users[i]) == 0) {
			if (list_move(&a->users[w - 1].rules, &a->users[i].rules) != 0)
				return -1;
			free(a->users[i].name);
			a->users[i].name = NULL;
			continue;
		}
		a->users[w++] = a->users[i];
	}
	a->nusers = w;
	for (size_t i = 0; i < a->nusers; i++)
		list_partition(&a->users[i].rules);
	list_partition(&a->anon);
	list_partition(&a->patterns);
	return 0;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* Splits off the next blank-separated token of [*p, end). */
static size_t next_token(const char **p, const char *end, const char **tok)
{
	const char *s = *p, *t;

	while (s < end && is_blank(*s))
		s++;
	t = s;
	while (s < end && !is_blank(*s))
		s++;
	*tok = t;
	*p = s;
	return (size_t)(s - t);
}

static int parse_access(const char *s, size_t len, uint8_t *access)
{
	static const struct {
		const char *word;
		uint8_t access;
	} words[] = {
	    {"read", ACL_READ},
	    {"write", ACL_WRITE},
	    {"readwrite", ACL_READ | ACL_WRITE},
	    {"deny", RULE_DENY},
	};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		if (strlen(words[i].word) == len && memcmp(words[i].word, s, len) == 0) {
			*access = words[i].access;
			return 0;
		}
	}
	return -1;
}

static uint8_t subst_flags(const char *s, size_t len)
{
	uint8_t f = 0;

	for (size_t i = 0; i + 1 < len; i++) {
		if (s[i] != '%')
			continue;
		if (s[i + 1] == 'c')
			f |= SUBST_C;
		else if (s[i + 1] == 'u')
			f |= SUBST_U;
		else
			continue;
		i++;
	}
	return f;
}

struct parser {
	acl *a;
	const char *name;
	size_t lineno;
	struct rule_list *section; /* where `topic` rules go; &a->anon or a user's */
	char *err;
	size_t errlen;
};

static int perr(struct parser *ps, const char *what, const char *s, size_t len)
{
	char q[48];

	if (s)
		set_err(ps->err, ps->errlen, "%s:%zu: %s '%s'", ps->name, ps->lineno, what,
		        quote(q, s, len));
	else
		set_err(ps->err, ps->errlen, "%s:%zu: %s", ps->name, ps->lineno, what);
	return -1;
}

static int parse_user(struct parser *ps, const char *p, const char *end)
{
	acl *a = ps->a;
	struct acl_user *u;

	while (p < end && is_blank(*p))
		p++;
	if (p == end)
		return perr(ps, "user without a name", NULL, 0);
	for (const char *q = p; q < end; q++)
		if ((unsigned char)*q < 0x20 || *q == 0x7f)
			return perr(ps, "user name contains a control character", p,
			            (size_t)(end - p));
	if ((size_t)(end - p) > FILTER_MAX)
		return perr(ps, "user name longer than 65535 bytes", NULL, 0);
	if (a->nusers == a->capusers) {
		size_t cap = a->capusers ? a->capusers * 2 : 8;
		struct acl_user *nu = realloc(a->users, cap * sizeof(*nu));
		if (!nu)
			return perr(ps, "out of memory", NULL, 0);
		a->users = nu;
		a->capusers = cap;
	}
	u = &a->users[a->nusers];
	memset(u, 0, sizeof(*u));
	u->len = (size_t)(end - p);
	u->name = malloc(u->len);
	if (!u->name)
		return perr(ps, "out of memory", NULL, 0);
	memcpy(u->name, p, u->len);
	a->nusers++;
	/* Pointer into a->users: refreshed below whenever users may move. */
	ps->section = &u->rules;
	return 0;
}

static int parse_rule(struct parser *ps, const char *p, const char *end, bool pattern)
{
	const char *t1, *rest;
	size_t l1 = next_token(&p, end, &t1);
	uint8_t access = ACL_READ | ACL_WRITE, subst;
	const char *f;
	size_t flen;
	uint8_t *copy;
	mqtt_str fs;

	if (l1 == 0)
		return perr(
		    ps, pattern ? "pattern without a topic filter" : "topic without a topic filter",
		    NULL, 0);
	rest = p;
	while (rest < end && is_blank(*rest))
		rest++;
	if (rest < end) {
		/* Two or more words: the first is the access, the rest (which
		 * may contain blanks) the filter, as mosquitto reads it. */
		if (parse_access(t1, l1, &access) != 0)
			return perr(ps, "bad access word (read, write, readwrite or deny)", t1, l1);
		f = rest;
		flen = (size_t)(end - rest);
	} else {
		f = t1;
		flen = l1;
	}
	fs = (mqtt_str){(const uint8_t *)f, (uint32_t)(flen > FILTER_MAX ? 0 : flen)};
	if (flen > FILTER_MAX || !mqtt_utf8_valid(fs.p, fs.len) || !mqtt_topic_filter_valid(fs))
		return perr(ps, "invalid topic filter", f, flen);
	subst = pattern ? subst_flags(f, flen) : 0;
	copy = malloc(flen);
	if (!copy)
		return perr(ps, "out of memory", NULL, 0);
	memcpy(copy, f, flen);
	if (list_add(pattern ? &ps->a->patterns : ps->section, copy, (uint32_t)flen, access,
	             subst) != 0) {
		free(copy);
		return perr(ps, "out of memory", NULL, 0);
	}
	return 0;
}

static int parse_line(struct parser *ps, const char *p, const char *end)
{
	const char *dir;
	size_t dlen;

	while (end > p && is_blank(end[-1]))
		end--;
	while (p < end && is_blank(*p))
		p++;
	if (p == end || *p == '#')
		return 0;
	dlen = next_token(&p, end, &dir);
	if (dlen == 4 && memcmp(dir, "user", 4) == 0)
		return parse_user(ps, p, end);
	if (dlen == 5 && memcmp(dir, "topic", 5) == 0)
		return parse_rule(ps, p, end, false);
	if (dlen == 7 && memcmp(dir, "pattern", 7) == 0)
		return parse_rule(ps, p, end, true);
	return perr(ps, "unknown directive", dir, dlen);
}

int acl_load_string(const char *name, const char *text, size_t len, acl **out, char *err,
                    size_t errlen)
{
	struct parser ps = {0};
	acl *a = NULL;
	ssize_t cur_user = -1; /* index of the user whose section is open */

	*out = NULL;
	if (!name)
		name = "acl";
	a = calloc(1, sizeof(*a));
	if (!a) {
		set_err(err, errlen, "%s: out of memory", name);
		goto fail;
	}
	ps = (struct parser){a, name, 0, &a->anon, err, errlen};
	for (size_t pos = 0; pos < len;) {
		const char *line = text + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t ll = nl ? (size_t)(nl - line) : len - pos;
		size_t before = a->nusers;

		pos += ll + (nl ? 1 : 0);
		ps.lineno++;
		/* a->users may have been reallocated: re-point the open section. */
		if (cur_user >= 0)
			ps.section = &a->users[cur_user].rules;
		if (parse_line(&ps, line, line + ll) != 0)
			goto fail;
		if (a->nusers != before)
			cur_user = (ssize_t)a->nusers - 1;
	}
	if (finish(a) != 0) {
		set_err(err, errlen, "%s: out of memory", name);
		goto fail;
	}
	*out = a;
	return 0;
fail:
	acl_free(&a);
	return -1;
}

int acl_load(const char *path, acl **out, char *err, size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t done = 0;
	int fd, rc = -1;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		set_err(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode) || st.st_size > (off_t)ACL_FILE_MAX) {
		set_err(err, errlen, "%s: not a regular file of at most 64 MiB", path);
		goto fail;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		set_err(err, errlen, "%s: out of memory", path);
		goto fail;
	}
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) { /* shrunk while reading: use what is there */
			if (n < 0) {
				set_err(err, errlen, "%s: %s", path, strerror(errno));
				goto fail;
			}
			break;
		}
		done += (size_t)n;
	}
	rc = acl_load_string(path, buf, done, out, err, errlen);
fail:
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

void acl_free(acl **ap)
{
	acl *a = ap ? *ap : NULL;

	if (!a)
		return;
	list_free(&a->anon);
	list_free(&a->patterns);
	for (size_t i = 0; i < a->nusers; i++) {
		free(a->users[i].name);
		list_free(&a->users[i].rules);
	}
	free(a->users);
	free(a);
	*ap = NULL;
}

/* ---------------------------------------------------------------- checking */

/* The client a check is about, with its rule list resolved once. */
struct who {
	mqtt_str cid;
	mqtt_str user; /* len 0 and p NULL when anonymous */
	bool anonymous;
	const struct rule_list *own; /* anonymous or the user's list; may be NULL */
};

static void who_init(struct who *w, const acl *a, mqtt_str cid, const mqtt_str *username)
{
	w->cid = cid;
	w->anonymous = !username || username->len == 0;
	w->user = w->anonymous ? MQTT_STR_NULL : *username;
	w->own = NULL;
	if (w->anonymous) {
		w->own = &a->anon;
		return;
	}
	size_t lo = 0, hi = a->nusers;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct acl_user *u = &a->users[mid];
		int c = name_cmp(w->user.p, w->user.len, u->name, u->len);
		if (c == 0) {
			w->own = &u->rules;
			return;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
}

/* Can this value be substituted literally? (See the design note.) */
static bool value_usable(mqtt_str v)
{
	for (uint32_t i = 0; i < v.len; i++)
		if (v.p[i] == '+' || v.p[i] == '#' || v.p[i] == '/')
			return false;
	return true;
}

/* Scratch space for one expansion: the stack buffer, or a heap block when too small. */
struct expansion {
	uint8_t stack[EXPAND_STACK];
	uint8_t *heap; /* owned; freed by expansion_done */
};

static void expansion_done(struct expansion *x)
{
	free(x->heap);
	x->heap = NULL;
}

enum { EXP_OK = 0, EXP_DEAD = 1, EXP_NOMEM = -1 };

/*
 * The filter rule r stands for, for client w, into *f (pointing into r or
 * x). EXP_DEAD when the rule can match nothing for this client, EXP_NOMEM
 * when the heap fallback failed. Whatever it returns, the caller ends with
 * expansion_done(x).
 */
static int expand(const struct acl_rule *r, const struct who *w, struct expansion *x, mqtt_str *f)
{
	size_t need = 0;
	uint8_t *dst;

	if (!r->subst) {
		*f = (mqtt_str){r->filter, r->len};
		return EXP_OK;
	}
	if ((r->subst & SUBST_U) && w->anonymous)
		return EXP_DEAD;
	if (((r->subst & SUBST_C) && !value_usable(w->cid)) ||
	    ((r->subst & SUBST_U) && !value_usable(w->user)))
		return EXP_DEAD;
	for (uint32_t i = 0; i < r->len; i++) {
		if (r->filter[i] == '%' && i + 1 < r->len &&
		    (r->filter[i + 1] == 'c' || r->filter[i + 1] == 'u')) {
			mqtt_str v = r->filter[i + 1] == 'c' ? w->cid : w->user;
			need += v.len;
			i++;
		} else {
			need++;
		}
	}
	if (need > UINT32_MAX)
		return EXP_DEAD;
	dst = x->stack;
	if (need > sizeof(x->stack)) {
		x->heap = malloc(need);
		if (!x->heap)
			return EXP_NOMEM;
		dst = x->heap;
	}
	size_t o = 0;
	for (uint32_t i = 0; i < r->len; i++) {
		if (r->filter[i] == '%' && i + 1 < r->len &&
		    (r->filter[i + 1] == 'c' || r->filter[i + 1] == 'u')) {
			mqtt_str v = r->filter[i + 1] == 'c' ? w->cid : w->user;
			if (v.len)
				memcpy(dst + o, v.p, v.len);
			o += v.len;
			i++;
		} else {
			dst[o++] = r->filter[i];
		}
	}
	/* A client-chosen '$' at the very start would put the rule in the
	 * reserved namespace, which the operator did not write: skip it. An
	 * empty expansion matches no topic either. */
	if (o == 0 || (dst[0] == '$' && r->filter[0] != '$'))
		return EXP_DEAD;
	*f = (mqtt_str){dst, (uint32_t)o};
	return EXP_OK;
}

/*
 * Does rule r match topic for client w? When its expansion cannot be built
 * the answer is `on_nomem`, chosen by the caller to fail closed.
 */
static bool rule_matches(const struct acl_rule *r, const struct who *w, mqtt_str topic,
                         bool on_nomem)
{
	struct expansion x;
	mqtt_str f;
	bool m;

	x.heap = NULL;
	switch (expand(r, w, &x, &f)) {
	case EXP_OK:
		m = mqtt_topic_matches(f, topic);
		break;
	case EXP_NOMEM:
		m = on_nomem;
		break;
	default:
		m = false;
		break;
	}
	expansion_done(&x);
	return m;
}

bool acl_check(const acl *a, mqtt_str clientid, const mqtt_str *username, mqtt_str topic,
               int access)
{
	const struct rule_list *lists[2];
	struct who w;

	if (!a || (access != ACL_READ && access != ACL_WRITE && access != (ACL_READ | ACL_WRITE)))
		return false;
	if (topic.len == 0 || !topic.p || !mqtt_topic_name_valid(topic))
		return false;
	who_init(&w, a, clientid, username);
	lists[0] = w.own;
	lists[1] = &a->patterns;
	for (int k = 0; k < 2; k++) {
		const struct rule_list *l = lists[k];
		for (size_t i = 0; l && i < l->ndeny; i++)
			if (rule_matches(&l->r[i], &w, topic, true))
				return false;
	}
	for (int k = 0; k < 2; k++) {
		const struct rule_list *l = lists[k];
		for (size_t i = l ? l->ndeny : 0; l && i < l->n; i++)
			if ((l->r[i].access & access) == access &&
			    rule_matches(&l->r[i], &w, topic, false))
				return true;
	}
	return false;
}

/* ---------------------------------------------------------------- filters */

/* Iterates the '/'-separated levels of a topic or filter. */
struct levels {
	const uint8_t *p, *end;
	bool done;
};

static void levels_init(struct levels *it, mqtt_str s)
{
	it->p = s.p;
	it->end = s.p + s.len;
	it->done = s.len == 0;
}

static bool levels_next(struct levels *it, mqtt_str *lv)
{
	const uint8_t *slash;

	if (it->done)
		return false;
	slash = memchr(it->p, '/', (size_t)(it->end - it->p));
	if (!slash) {
		*lv = (mqtt_str){it->p, (uint32_t)(it->end - it->p)};
		it->done = true;
	} else {
		*lv = (mqtt_str){it->p, (uint32_t)(slash - it->p)};
		it->p = slash + 1;
	}
	return true;
}

static bool is_plus(mqtt_str lv)
{
	return lv.len == 1 && lv.p[0] == '+';
}
static bool is_hash(mqtt_str lv)
{
	return lv.len == 1 && lv.p[0] == '#';
}
static bool is_dollar(mqtt_str lv)
{
	return lv.len > 0 && lv.p[0] == '$';
}

/* At the first level a wildcard does not reach a '$' level. */
static bool dollar_clash(size_t depth, mqtt_str x, mqtt_str y)
{
	if (depth != 0)
		return false;
	bool wx = is_plus(x) || is_hash(x), wy = is_plus(y) || is_hash(y);
	return (wx && !wy && is_dollar(y)) || (wy && !wx && is_dollar(x));
}

/* Is there a topic name both valid filters r and f match? */
static bool filters_intersect(mqtt_str r, mqtt_str f)
{
	struct levels ri, fi;
	mqtt_str a, b;

	levels_init(&ri, r);
	levels_init(&fi, f);
	for (size_t depth = 0;; depth++) {
		bool ha = levels_next(&ri, &a), hb = levels_next(&fi, &b);
		if (!ha && !hb)
			return true;
		/* One ended: only a '#' left on the other matches that parent. */
		if (!ha)
			return is_hash(b);
		if (!hb)
			return is_hash(a);
		if (dollar_clash(depth, a, b))
			return false;
		if (is_hash(a) || is_hash(b))
			return true;
		if (!is_plus(a) && !is_plus(b) && !mqtt_str_eq(a, b))
			return false;
	}
}

/* Does valid filter r match every topic name valid filter f matches? */
static bool filter_covers(mqtt_str r, mqtt_str f)
{
	struct levels ri, fi;
	mqtt_str a, b;

	levels_init(&ri, r);
	levels_init(&fi, f);
	for (size_t depth = 0;; depth++) {
		bool ha = levels_next(&ri, &a), hb = levels_next(&fi, &b);
		if (!ha && !hb)
			return true;
		if (!ha) /* f's topics go deeper than r reaches */
			return false;
		if (!hb) /* f's topics end here: r must match the parent */
			return is_hash(a);
		if (dollar_clash(depth, a, b))
			return false;
		if (is_hash(a))
			return true;
		if (is_hash(b)) {
			/* At the top "+/#" matches every topic "#" does (one or
			 * more levels, none beginning with '$'); deeper down "#"
			 * also matches the parent, which "+/#" does not. */
			mqtt_str c;
			return depth == 0 && is_plus(a) && levels_next(&ri, &c) && is_hash(c);
		}
		if (is_plus(a))
			continue;
		if (is_plus(b) || !mqtt_str_eq(a, b))
			return false;
	}
}

int acl_check_filter(const acl *a, mqtt_str clientid, const mqtt_str *username, mqtt_str filter)
{
	const struct rule_list *lists[2];
	struct who w;
	bool deny_touches = false, some_read = false;

	if (!a || filter.len == 0 || !filter.p || !mqtt_topic_filter_valid(filter))
		return ACL_FILTER_DENY;
	who_init(&w, a, clientid, username);
	lists[0] = w.own;
	lists[1] = &a->patterns;
	for (int k = 0; k < 2; k++) {
		const struct rule_list *l = lists[k];
		for (size_t i = 0; l && i < l->ndeny; i++) {
			struct expansion x;
			mqtt_str f;
			bool covers = false;
			int e;

			x.heap = NULL;
			e = expand(&l->r[i], &w, &x, &f);
			if (e == EXP_OK) {
				covers = filter_covers(f, filter);
				if (!covers && filters_intersect(f, filter))
					deny_touches = true;
			}
			expansion_done(&x);
			/* Without the expansion we cannot rule the deny out. */
			if (covers || e == EXP_NOMEM)
				return ACL_FILTER_DENY;
		}
	}
	for (int k = 0; k < 2; k++) {
		const struct rule_list *l = lists[k];
		for (size_t i = l ? l->ndeny : 0; l && i < l->n; i++) {
			struct expansion x;
			mqtt_str f;
			bool covers = false;
			int e;

			if (!(l->r[i].access & ACL_READ))
				continue;
			x.heap = NULL;
			e = expand(&l->r[i], &w, &x, &f);
			if (e == EXP_OK && filters_intersect(f, filter)) {
				some_read = true;
				covers = !deny_touches && filter_covers(f, filter);
			}
			expansion_done(&x);
			if (covers)
				return ACL_FILTER_ALLOW;
		}
	}
	return some_read ? ACL_FILTER_PARTIAL : ACL_FILTER_DENY;
}
