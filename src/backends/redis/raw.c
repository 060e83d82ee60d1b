/*
 * raw.c - raw actions: {"commands": ["SET conn:${clientid} ${clientid}", ...]}.
 *
 * A command's text is split into arguments at single spaces, once, when the
 * configuration is loaded (as the spec says: "fields separated exactly by one
 * space"; two spaces in a row, or one at either end, would make an empty
 * argument and are refused). Then each `${var}` inside an argument is
 * compiled into a reference. At run time an argument is built from its
 * pieces and sent as one binary-safe argument: a value containing spaces,
 * quotes, CR/LF or zero bytes stays one argument and is never parsed again,
 * so a client id or payload cannot add arguments or commands.
 *
 * The command name must be literal (a client must not choose the command),
 * and commands that would change the state of a pooled connection or block
 * it (SUBSCRIBE, MULTI, SELECT, AUTH, BLPOP, ...) are refused.
 *
 * Order: a list of commands runs in order, each sent after the previous
 * one's reply, and stops at the first error (the job fails). A list that
 * begins with "pipeline" is sent as one pipeline: every command is sent,
 * and the job fails if any of them did. A single command is pipelined with
 * the rest of the batch either way.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backends/redis/redis_be.h"

#define LIT 0xFF

typedef struct rpart {
	uint8_t var; /* enum sql_var, or LIT */
	uint32_t off, len; /* LIT: the text at raw->text + off */
} rpart;

typedef struct rarg {
	uint32_t first, n; /* parts */
} rarg;

typedef struct rcmd {
	uint32_t first, n; /* args */
} rcmd;

typedef struct rraw {
	bool pipeline;
	uint32_t ncmds, nargs, nparts;
	rcmd *cmds;
	rarg *args;
	rpart *parts;
	char *text; /* every literal piece */
	size_t tlen;
} rraw;

static const char *const refused[] = {
	"SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
	"MONITOR",   "SELECT",     "MULTI",      "EXEC",        "DISCARD",      "WATCH",
	"UNWATCH",   "QUIT",       "RESET",      "AUTH",        "HELLO",        "CLIENT",
	"SYNC",      "PSYNC",      "SHUTDOWN",   "DEBUG",       "BLPOP",        "BRPOP",
	"BRPOPLPUSH", "BLMOVE",    "BLMPOP",     "BZPOPMIN",    "BZPOPMAX",     "BZMPOP",
	"WAIT",      "REPLICAOF",  "SLAVEOF",    "FAILOVER",    NULL,
};

void redis_raw_free(void *p)
{
	rraw *r = p;
	if (!r)
		return;
	free(r->cmds);
	free(r->args);
	free(r->parts);
	free(r->text);
	free(r);
}

static int grow(void **v, uint32_t n, size_t each)
{
	if (n & (n - 1) && n != 0)
		return 0; /* not a power of two: room left */
	size_t nc = n ? (size_t)n * 2 : 8;
	void *nv = realloc(*v, nc * each);
	if (!nv)
		return -1;
	*v = nv;
	return 0;
}

static int add_part(rraw *r, uint8_t var, const char *lit, size_t len)
{
	if (grow((void **)&r->parts, r->nparts, sizeof(rpart)))
		return -1;
	rpart *p = &r->parts[r->nparts++];
	p->var = var;
	p->off = (uint32_t)r->tlen;
	p->len = (uint32_t)len;
	if (var == LIT) {
		memcpy(r->text + r->tlen, lit, len);
		r->tlen += len;
	}
	return 0;
}

/* One argument src[0..n): literal pieces and ${var}s. */
static int compile_arg(rraw *r, const char *src, size_t n, char *err, size_t errlen)
{
	if (grow((void **)&r->args, r->nargs, sizeof(rarg)))
		goto oom;
	rarg *a = &r->args[r->nargs++];
	a->first = r->nparts;
	size_t i = 0, lit = 0;
	while (i < n) {
		if (src[i] == '$' && i + 1 < n && src[i + 1] == '{') {
			const char *close = memchr(src + i + 2, '}', n - i - 2);
			if (!close) {
				snprintf(err, errlen, "\"${\" without \"}\" in \"%.*s\"", (int)n, src);
				return -1;
			}
			size_t nl = (size_t)(close - src - i - 2);
			int var = -1;
			for (int v = 0; v < SV__COUNT; v++)
				if (strlen(sql_var_name(v)) == nl && memcmp(sql_var_name(v), src + i + 2, nl) == 0)
					var = v;
			if (var < 0) {
				snprintf(err, errlen,
				         "unknown variable ${%.*s} (known: clientid, username, peerhost, node, "
				         "topic, qos, msgid, payload, retain, timestamp)",
				         (int)(nl > 40 ? 40 : nl), src + i + 2);
				return -1;
			}
			if (i > lit && add_part(r, LIT, src + lit, i - lit))
				goto oom;
			if (add_part(r, (uint8_t)var, NULL, 0))
				goto oom;
			i = (size_t)(close - src) + 1;
			lit = i;
			continue;
		}
		i++;
	}
	if (n > lit && add_part(r, LIT, src + lit, n - lit))
		goto oom;
	r->args[r->nargs - 1].n = r->nparts - r->args[r->nargs - 1].first;
	return 0;
oom:
	snprintf(err, errlen, "out of memory");
	return -1;
}

static int compile_cmd(rraw *r, const char *src, char *err, size_t errlen)
{
	size_t len = strlen(src);
	if (len == 0) {
		snprintf(err, errlen, "an empty command");
		return -1;
	}
	if (src[0] == ' ' || src[len - 1] == ' ' || strstr(src, "  ")) {
		snprintf(err, errlen,
		         "\"%s\": arguments are separated by exactly one space (an empty argument "
		         "is not allowed)",
		         src);
		return -1;
	}
	if (grow((void **)&r->cmds, r->ncmds, sizeof(rcmd))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	rcmd *c = &r->cmds[r->ncmds++];
	c->first = r->nargs;
	const char *name_end = strchr(src, ' ');
	size_t nlen = name_end ? (size_t)(name_end - src) : len;
	if (memmem(src, nlen, "${", 2)) {
		snprintf(err, errlen, "\"%s\": the command name must be literal, not a variable", src);
		return -1;
	}
	for (int k = 0; refused[k]; k++) {
		if (strlen(refused[k]) == nlen && strncasecmp(src, refused[k], nlen) == 0) {
			snprintf(err, errlen,
			         "\"%s\": %s is not allowed in an action (it would change or block a "
			         "pooled connection)",
			         src, refused[k]);
			return -1;
		}
	}
	const char *p = src;
	for (;;) {
		const char *sp = strchr(p, ' ');
		size_t n = sp ? (size_t)(sp - p) : strlen(p);
		if (compile_arg(r, p, n, err, errlen))
			return -1;
		if (!sp)
			break;
		p = sp + 1;
	}
	r->cmds[r->ncmds - 1].n = r->nargs - r->cmds[r->ncmds - 1].first;
	return 0;
}

int redis_raw_compile(const char *const *texts, size_t n, void **out, char *err, size_t errlen)
{
	rraw *r = calloc(1, sizeof(*r));
	size_t total = 0;
	for (size_t k = 0; k < n; k++)
		total += strlen(texts[k]);
	if (!r || !(r->text = malloc(total + 1))) {
		free(r);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	size_t k = 0;
	if (n > 0 && strcasecmp(texts[0], "pipeline") == 0) {
		r->pipeline = true;
		k = 1;
	}
	if (k == n) {
		snprintf(err, errlen, "\"pipeline\" needs at least one command after it");
		goto fail;
	}
	for (; k < n; k++) {
		char e[400];
		if (compile_cmd(r, texts[k], e, sizeof(e))) {
			snprintf(err, errlen, "command %zu: %s", k + 1, e);
			goto fail;
		}
	}
	*out = r;
	return 0;
fail:
	redis_raw_free(r);
	return -1;
}

/* The text of a variable for a job: (p, n) point into the job or scratch. */
static void var_text(int var, const pjob *j, const char *node, char scratch[48], const void **p,
                     size_t *n)
{
	sql_val v = sql_var_value(var, j, node, scratch);
	switch (v.type) {
	case SQLV_INT: *n = (size_t)snprintf(scratch, 48, "%lld", (long long)v.i); *p = scratch; break;
	case SQLV_TEXT:
	case SQLV_BLOB: *p = v.p; *n = v.len; break;
	default: *p = ""; *n = 0; break;
	}
}

static int build(const rraw *r, const rcmd *cmd, const pjob *j, const char *node, rargs *a,
                 char (*scratch)[48]);

uint32_t redis_raw_ncmds(const void *raw) { return ((const rraw *)raw)->ncmds; }

int redis_raw_args(const void *raw, uint32_t k, const pjob *j, const char *node, rargs *a,
                   char (*scratch)[48])
{
	const rraw *r = raw;
	if (k >= r->ncmds || r->cmds[k].n > RARGS_MAX) {
		ra_init(a);
		a->oom = true;
		return -1;
	}
	return build(r, &r->cmds[k], j, node, a, scratch);
}

/* The bytes of one piece of an argument: literal text or a variable's
 * value (numbers formatted into scratch). */
static void piece(const rraw *r, const rpart *p, const pjob *j, const char *node,
                  char scratch[48], const void **vp, size_t *vn)
{
	if (p->var == LIT) {
		*vp = r->text + p->off;
		*vn = p->len;
	} else {
		var_text(p->var, j, node, scratch, vp, vn);
	}
}

/* Builds command k's arguments into a (pieces joined into owned buffers). */
static int build(const rraw *r, const rcmd *cmd, const pjob *j, const char *node, rargs *a,
                 char (*scratch)[48])
{
	ra_init(a);
	for (uint32_t x = 0; x < cmd->n; x++) {
		const rarg *g = &r->args[cmd->first + x];
		if (g->n == 1) { /* one piece: no copy */
			const void *vp;
			size_t vn;
			piece(r, &r->parts[g->first], j, node, scratch[x % RARGS_MAX], &vp, &vn);
			ra_add(a, vp, vn);
			continue;
		}
		/* two passes over the pieces (however many: an argument may hold
		 * any number of ${var}s): the length, then the bytes */
		size_t total = 0;
		char sc[48];
		for (uint32_t y = 0; y < g->n; y++) {
			const void *vp;
			size_t vn;
			piece(r, &r->parts[g->first + y], j, node, sc, &vp, &vn);
			total += vn;
		}
		if (a->nowned >= RARGS_MAX) {
			a->oom = true;
			return -1;
		}
		char *buf = malloc(total + 1);
		if (!buf) {
			a->oom = true;
			return -1;
		}
		size_t at = 0;
		for (uint32_t y = 0; y < g->n; y++) {
			const void *vp;
			size_t vn;
			piece(r, &r->parts[g->first + y], j, node, sc, &vp, &vn);
			memcpy(buf + at, vp, vn);
			at += vn;
		}
		a->owned[a->nowned++] = buf;
		ra_add(a, buf, total);
	}
	return 0;
}

int redis_raw_run(pconn *c, uint32_t i, pjob *j)
{
	const rraw *r = j->rule->raw;
	const char *node = c->host ? c->host->node : NULL;
	char scratch[RARGS_MAX][48];
	bool stepwise = !r->pipeline && r->ncmds > 1;
	for (uint32_t k = 0; k < r->ncmds; k++) {
		const rcmd *cmd = &r->cmds[k];
		if (cmd->n > RARGS_MAX) {
			rds_outcome(c, i, RJ_FAIL, "too many arguments", 18);
			return 0;
		}
		rargs a;
		redis_raw_args(r, k, j, node, &a, scratch);
		if (!stepwise) {
			rds_append(c, i, &a);
			continue;
		}
		redisReply *rep = rds_call(c, &a);
		if (!rep)
			return -1;
		int cls = rds_error_class(rep);
		if (cls != RJ_OK)
			rds_outcome(c, i, cls, rep->str, rep->len);
		freeReplyObject(rep);
		if (cls != RJ_OK)
			return 0; /* the rest of the list does not run */
	}
	return 0;
}
