/*
 * redis.c - the Redis backend (`backend.redis.*`): pool keys, connecting
 * (directly or through Sentinel), the reply pipeline, run_batch and the
 * backend table. See redis_be.h for the design and the key layout.
 *
 * Errors. A reply error that names a passing state of the server (LOADING,
 * READONLY after a failover, MASTERDOWN, BUSY, TRYAGAIN, OOM, NOREPLICAS,
 * CLUSTERDOWN) is retried with the framework's backoff; a READONLY or
 * NOSCRIPT also reconnects, which finds the new master and loads the scripts
 * again. Any other error reply is the command's own fault and fails its job
 * alone. A broken connection fails nothing: every job whose replies were not
 * all read is retried, in order, on a new connection.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "backends/common/funcs.h"
#include "backends/redis/redis_be.h"
#include "util/log.h"

/* ---------------------------------------------------------------- arguments */

void ra_init(rargs *a)
{
	a->n = 0;
	a->nowned = 0;
	a->oom = false;
}

void ra_add(rargs *a, const void *p, size_t n)
{
	if (a->n >= RARGS_MAX) {
		a->oom = true;
		return;
	}
	a->v[a->n] = p ? p : "";
	a->l[a->n] = n;
	a->n++;
}

void ra_str(rargs *a, const char *s) { ra_add(a, s, strlen(s)); }

void ra_key(rargs *a, const char *prefix, const void *p, size_t n, const void *p2, size_t n2)
{
	size_t pl = strlen(prefix), total = pl + n + (p2 ? 1 + n2 : 0);
	char *k = malloc(total + 1);
	if (!k || a->nowned >= RARGS_MAX) {
		free(k);
		a->oom = true;
		return;
	}
	memcpy(k, prefix, pl);
	if (n)
		memcpy(k + pl, p, n);
	if (p2) {
		k[pl + n] = ':';
		if (n2)
			memcpy(k + pl + n + 1, p2, n2);
	}
	k[total] = 0;
	a->owned[a->nowned++] = k;
	ra_add(a, k, total);
}

void ra_int(rargs *a, int64_t v)
{
	char *t = malloc(24);
	if (!t || a->nowned >= RARGS_MAX) {
		free(t);
		a->oom = true;
		return;
	}
	int len = snprintf(t, 24, "%lld", (long long)v);
	a->owned[a->nowned++] = t;
	ra_add(a, t, (size_t)len);
}

void ra_msg_fields(rargs *a, const kmq_msg *m, const char *id, bool retain)
{
	ra_str(a, "id");
	ra_add(a, id, 32);
	ra_str(a, "from");
	ra_add(a, m->origin.p, m->origin.len);
	ra_str(a, "qos");
	ra_int(a, m->qos);
	ra_str(a, "topic");
	ra_add(a, m->topic.p, m->topic.len);
	ra_str(a, "retain");
	ra_str(a, retain ? "1" : "0");
	ra_str(a, "payload");
	ra_add(a, m->payload.p, m->payload.len);
	ra_str(a, "ts");
	ra_int(a, (int64_t)(m->ts_ms / 1000));
}

void ra_free(rargs *a)
{
	for (int i = 0; i < a->nowned; i++)
		free(a->owned[i]);
	a->nowned = 0;
	a->n = 0;
}

/* ---------------------------------------------------------------- the pipeline */

void rds_outcome(pconn *c, uint32_t job, int outcome, const char *why, size_t whylen)
{
	if (job < c->jscap && outcome > c->js[job].outcome)
		c->js[job].outcome = (uint8_t)outcome;
	if (why && outcome != RJ_OK)
		snprintf(c->err, sizeof(c->err), "%.*s", (int)(whylen > 200 ? 200 : whylen), why);
}

int rds_error_class(const redisReply *r)
{
	static const char *const passing[] = {"LOADING",     "READONLY", "MASTERDOWN", "BUSY",
	                                      "TRYAGAIN",    "OOM",      "NOREPLICAS", "CLUSTERDOWN",
	                                      "NOSCRIPT",    "MISCONF",  NULL};
	if (!r || r->type != REDIS_REPLY_ERROR)
		return RJ_OK;
	for (int i = 0; passing[i]; i++) {
		size_t n = strlen(passing[i]);
		if (r->len >= n && strncmp(r->str, passing[i], n) == 0 &&
		    (r->len == n || r->str[n] == ' '))
			return RJ_RETRY;
	}
	return RJ_FAIL;
}

/* READONLY (we talk to a replica after a failover) and NOSCRIPT (the script
 * cache was flushed) are cured by a new connection. */
static void note_error(pconn *c, const redisReply *r)
{
	if (r->len >= 8 && (strncmp(r->str, "READONLY", 8) == 0 || strncmp(r->str, "NOSCRIPT", 8) == 0))
		c->broken = true;
}

int rds_append(pconn *c, uint32_t job, rargs *a)
{
	if (a->oom || a->n == 0) {
		ra_free(a);
		rds_outcome(c, job, RJ_RETRY, "out of memory", 13);
		return 0;
	}
	if (c->npend == c->pcap) {
		size_t nc = c->pcap ? c->pcap * 2 : 256;
		rpend *np = realloc(c->pend, nc * sizeof(*np));
		if (!np) {
			ra_free(a);
			rds_outcome(c, job, RJ_RETRY, "out of memory", 13);
			return 0;
		}
		c->pend = np;
		c->pcap = nc;
	}
	int rc = redisAppendCommandArgv(c->rc, a->n, a->v, a->l);
	ra_free(a);
	if (rc != REDIS_OK) {
		rds_outcome(c, job, RJ_RETRY, "out of memory", 13);
		return 0;
	}
	c->pend[c->npend++] = (rpend){job};
	if (job < c->jscap)
		c->js[job].left++;
	return 0;
}

int rds_flush(pconn *c)
{
	size_t i = 0;
	for (; i < c->npend; i++) {
		redisReply *r = NULL;
		if (redisGetReply(c->rc, (void **)&r) != REDIS_OK || !r) {
			snprintf(c->err, sizeof(c->err), "%s", c->rc->errstr[0] ? c->rc->errstr : "connection lost");
			break;
		}
		uint32_t job = c->pend[i].job;
		if (r->type == REDIS_REPLY_ERROR) {
			note_error(c, r);
			rds_outcome(c, job, rds_error_class(r), r->str, r->len);
		}
		if (job < c->jscap && c->js[job].left)
			c->js[job].left--;
		freeReplyObject(r);
	}
	if (i < c->npend) {
		for (; i < c->npend; i++)
			rds_outcome(c, c->pend[i].job, RJ_RETRY, NULL, 0);
		c->npend = 0;
		return -1;
	}
	c->npend = 0;
	return 0;
}

redisReply *rds_call(pconn *c, rargs *a)
{
	if (rds_flush(c)) {
		ra_free(a);
		return NULL;
	}
	if (a->oom) {
		ra_free(a);
		snprintf(c->err, sizeof(c->err), "out of memory");
		return NULL;
	}
	redisReply *r = redisCommandArgv(c->rc, a->n, a->v, a->l);
	ra_free(a);
	if (!r)
		snprintf(c->err, sizeof(c->err), "%s", c->rc->errstr[0] ? c->rc->errstr : "connection lost");
	else if (r->type == REDIS_REPLY_ERROR)
		note_error(c, r);
	return r;
}

int rds_pipeline(pconn *c, rargs *cmds, size_t n, redisReply **out)
{
	for (size_t k = 0; k < n; k++)
		out[k] = NULL;
	int rc = rds_flush(c);
	for (size_t k = 0; k < n; k++) {
		if (rc == 0 && (cmds[k].oom ||
		                redisAppendCommandArgv(c->rc, cmds[k].n, cmds[k].v, cmds[k].l) != REDIS_OK))
			rc = -1;
		ra_free(&cmds[k]);
	}
	if (rc) {
		snprintf(c->err, sizeof(c->err), "out of memory");
		return -1;
	}
	for (size_t k = 0; k < n; k++) {
		if (redisGetReply(c->rc, (void **)&out[k]) != REDIS_OK || !out[k]) {
			snprintf(c->err, sizeof(c->err), "%s",
			         c->rc->errstr[0] ? c->rc->errstr : "connection lost");
			for (size_t x = 0; x < n; x++) {
				if (out[x])
					freeReplyObject(out[x]);
				out[x] = NULL;
			}
			return -1;
		}
		if (out[k]->type == REDIS_REPLY_ERROR)
			note_error(c, out[k]);
	}
	return 0;
}

int rds_hgetall_many(pconn *c, const char *prefix, size_t n, rds_key_fn key,
                     rds_reply_fn on_reply, void *ud)
{
	enum { CHUNK = 256 };
	rargs *cmds = malloc(CHUNK * sizeof(rargs));
	redisReply *rep[CHUNK];
	if (!cmds) {
		snprintf(c->err, sizeof(c->err), "out of memory");
		return -1;
	}
	int rc = 0;
	for (size_t at = 0; at < n && rc == 0; at += CHUNK) {
		size_t k = n - at < CHUNK ? n - at : CHUNK;
		for (size_t x = 0; x < k; x++) {
			const void *p;
			size_t len;
			key(ud, at + x, &p, &len);
			ra_init(&cmds[x]);
			ra_str(&cmds[x], "HGETALL");
			ra_key(&cmds[x], prefix, p, len, NULL, 0);
		}
		if (rds_pipeline(c, cmds, k, rep)) {
			rc = -1;
			break;
		}
		for (size_t x = 0; x < k; x++) {
			on_reply(ud, at + x, rep[x]);
			freeReplyObject(rep[x]);
		}
	}
	free(cmds);
	return rc;
}

void rds_topics_free(rtopic **tp, size_t n)
{
	rtopic *t = *tp;
	if (!t)
		return;
	*tp = NULL;
	for (size_t i = 0; i < n; i++)
		free(t[i].p);
	free(t);
}

int rds_matching_topics(pconn *c, uint32_t job, const char *index, mqtt_str filter, rtopic **out,
                        size_t *nout)
{
	rtopic *t = NULL;
	size_t n = 0, cap = 0;
	char cursor[32] = "0";
	*out = NULL;
	*nout = 0;
	do {
		rargs a;
		ra_init(&a);
		ra_str(&a, "SSCAN");
		ra_str(&a, index);
		ra_str(&a, cursor);
		ra_str(&a, "COUNT");
		ra_str(&a, "1000");
		redisReply *r = rds_call(c, &a);
		if (!r) {
			rds_topics_free(&t, n);
			return -1;
		}
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
		    r->element[0]->type != REDIS_REPLY_STRING || r->element[0]->len >= sizeof(cursor) ||
		    r->element[1]->type != REDIS_REPLY_ARRAY) {
			if (r->type == REDIS_REPLY_ERROR)
				rds_outcome(c, job, rds_error_class(r), r->str, r->len);
			freeReplyObject(r);
			break;
		}
		memcpy(cursor, r->element[0]->str, r->element[0]->len);
		cursor[r->element[0]->len] = 0;
		const redisReply *m = r->element[1];
		for (size_t k = 0; k < m->elements; k++) {
			const redisReply *e = m->element[k];
			if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > 65535 ||
			    !mqtt_topic_matches(filter, (mqtt_str){(const uint8_t *)e->str, (uint32_t)e->len}))
				continue;
			if (n == cap) {
				size_t nc = cap ? cap * 2 : 16;
				rtopic *nt = realloc(t, nc * sizeof(*nt));
				if (!nt)
					goto oom;
				t = nt;
				cap = nc;
			}
			t[n].p = malloc(e->len + 1);
			if (!t[n].p)
				goto oom;
			memcpy(t[n].p, e->str, e->len);
			t[n].p[e->len] = 0;
			t[n].len = (uint32_t)e->len;
			n++;
			continue;
		oom:
			freeReplyObject(r);
			rds_topics_free(&t, n);
			rds_outcome(c, job, RJ_RETRY, "out of memory", 13);
			return 0;
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
	*out = t;
	*nout = n;
	return 0;
}

const redisReply *rds_field(const redisReply *h, const char *name)
{
	if (!h || h->type != REDIS_REPLY_ARRAY)
		return NULL;
	size_t n = strlen(name);
	for (size_t i = 0; i + 1 < h->elements; i += 2) {
		const redisReply *k = h->element[i];
		if (k->type == REDIS_REPLY_STRING && k->len == n && memcmp(k->str, name, n) == 0)
			return h->element[i + 1];
	}
	return NULL;
}

static sql_val field_text(const redisReply *h, const char *name)
{
	const redisReply *v = rds_field(h, name);
	if (!v || v->type != REDIS_REPLY_STRING)
		return SQLV_NUL;
	return SQLV_T(v->str, v->len);
}

static int64_t field_int(const redisReply *h, const char *name, int64_t def)
{
	const redisReply *v = rds_field(h, name);
	if (!v || v->type != REDIS_REPLY_STRING || v->len == 0 || v->len > 20)
		return def;
	char t[24];
	memcpy(t, v->str, v->len);
	t[v->len] = 0;
	if (strcmp(t, "true") == 0)
		return 1;
	if (strcmp(t, "false") == 0)
		return 0;
	char *end;
	long long x = strtoll(t, &end, 10);
	return *end ? def : x;
}

kmq_msg *rds_hash_msg(const redisReply *h, bool retained)
{
	if (!h || h->type != REDIS_REPLY_ARRAY || h->elements == 0)
		return NULL;
	sql_val topic = field_text(h, "topic");
	if (topic.type == SQLV_NULL)
		return NULL;
	sql_val payload = field_text(h, "payload");
	if (payload.type != SQLV_NULL)
		payload.type = SQLV_BLOB;
	return sql_row_msg(field_text(h, "id"), topic, field_text(h, "from"),
	                   SQLV_I(field_int(h, "qos", 0)),
	                   SQLV_I(retained ? 1 : field_int(h, "retain", 0)), payload);
}

/* ---------------------------------------------------------------- connecting */

static const char ACK_SCRIPT[] =
	"local c = redis.call('GET', KEYS[1]) "
	"if (not c) or c < ARGV[1] then redis.call('SET', KEYS[1], ARGV[1]) end return 1";
/* KEYS: client hash, owner, node hash; ARGV: clientid, node, offline_at */
static const char DISC_SCRIPT[] =
	"redis.call('HDEL', KEYS[3], ARGV[1]) "
	"local o = redis.call('GET', KEYS[2]) "
	"if o and o ~= ARGV[2] then return 0 end "
	"redis.call('HSET', KEYS[1], 'state', '0', 'offline_at', ARGV[3]) return 1";

static struct timeval tv_ms(uint64_t ms)
{
	return (struct timeval){(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
}

static redisContext *dial(const char *host, int port, const redis_pool_cfg *cfg, char *err,
                          size_t errlen)
{
	redisContext *rc = redisConnectWithTimeout(host, port, tv_ms(cfg->connect_timeout_ms));
	if (!rc || rc->err) {
		snprintf(err, errlen, "%s:%d: %s", host, port, rc ? rc->errstr : "out of memory");
		if (rc)
			redisFree(rc);
		return NULL;
	}
	redisSetTimeout(rc, tv_ms(cfg->command_timeout_ms));
	redisEnableKeepAlive(rc);
	return rc;
}

/* A command that must answer +OK (or any non-error) during set-up. */
static int setup_cmd(redisContext *rc, int argc, const char **argv, const size_t *lens,
                     const char *what, char *err, size_t errlen)
{
	redisReply *r = redisCommandArgv(rc, argc, argv, lens);
	if (!r) {
		snprintf(err, errlen, "%s: %s", what, rc->errstr);
		return -1;
	}
	int bad = r->type == REDIS_REPLY_ERROR;
	if (bad)
		snprintf(err, errlen, "%s: %.*s", what, (int)(r->len > 200 ? 200 : r->len), r->str);
	freeReplyObject(r);
	return bad ? -1 : 0;
}

/* Asks the sentinels, in order, for the master's address. */
static int ask_sentinels(const redis_pool_cfg *cfg, char *host, size_t hlen, int *port, char *err,
                         size_t errlen)
{
	const char *s = cfg->server;
	err[0] = 0;
	while (*s) {
		const char *comma = strchr(s, ',');
		size_t n = comma ? (size_t)(comma - s) : strlen(s);
		while (n && s[0] == ' ') {
			s++;
			n--;
		}
		char sh[256];
		int sp;
		if (backend_parse_addr(s, n, sh, sizeof(sh), &sp) == 0) {
			char e[200];
			redisContext *rc = dial(sh, sp, cfg, e, sizeof(e));
			if (rc) {
				redisReply *r = redisCommand(rc, "SENTINEL get-master-addr-by-name %s",
				                             cfg->sentinel);
				if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
				    r->element[0]->type == REDIS_REPLY_STRING &&
				    r->element[1]->type == REDIS_REPLY_STRING &&
				    r->element[0]->len < hlen) {
					memcpy(host, r->element[0]->str, r->element[0]->len);
					host[r->element[0]->len] = 0;
					*port = atoi(r->element[1]->str);
					freeReplyObject(r);
					redisFree(rc);
					return 0;
				}
				snprintf(err, errlen, "sentinel %s:%d does not know master \"%s\"", sh, sp,
				         cfg->sentinel);
				if (r)
					freeReplyObject(r);
				redisFree(rc);
			} else {
				snprintf(err, errlen, "sentinel %s", e);
			}
		}
		if (!comma)
			break;
		s = comma + 1;
	}
	if (!err[0])
		snprintf(err, errlen, "no sentinel address in \"%s\"", cfg->server);
	return -1;
}

redisContext *rds_connect(const redis_pool_cfg *cfg, char *err, size_t errlen)
{
	char host[256];
	int port = 0;
	if (cfg->sentinel && cfg->sentinel[0]) {
		if (ask_sentinels(cfg, host, sizeof(host), &port, err, errlen))
			return NULL;
	} else if (backend_parse_addr(cfg->server, strlen(cfg->server), host, sizeof(host), &port)) {
		snprintf(err, errlen, "server \"%s\" is not host:port", cfg->server);
		return NULL;
	}
	redisContext *rc = dial(host, port, cfg, err, errlen);
	if (!rc)
		return NULL;
	if (cfg->password && cfg->password[0]) {
		const char *argv[3] = {"AUTH", cfg->username, cfg->password};
		size_t lens[3] = {4, cfg->username ? strlen(cfg->username) : 0, strlen(cfg->password)};
		bool user = cfg->username && cfg->username[0];
		const char *av2[2] = {"AUTH", cfg->password};
		size_t l2[2] = {4, lens[2]};
		if (user ? setup_cmd(rc, 3, argv, lens, "AUTH", err, errlen)
		         : setup_cmd(rc, 2, av2, l2, "AUTH", err, errlen))
			goto fail;
	}
	if (cfg->database) {
		char db[24];
		snprintf(db, sizeof(db), "%lld", (long long)cfg->database);
		const char *argv[2] = {"SELECT", db};
		size_t lens[2] = {6, strlen(db)};
		if (setup_cmd(rc, 2, argv, lens, "SELECT", err, errlen))
			goto fail;
	}
	if (cfg->sentinel && cfg->sentinel[0]) {
		/* the sentinels may still name a master that has just become a
		 * replica: ask the server itself */
		redisReply *r = redisCommand(rc, "ROLE");
		bool master = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
		              r->element[0]->type == REDIS_REPLY_STRING &&
		              strcmp(r->element[0]->str, "master") == 0;
		if (r)
			freeReplyObject(r);
		if (!master) {
			snprintf(err, errlen, "%s:%d is not a master (yet)", host, port);
			goto fail;
		}
	}
	return rc;
fail:
	redisFree(rc);
	return NULL;
}

static int load_script(redisContext *rc, const char *text, char sha[41], char *err, size_t errlen)
{
	const char *argv[3] = {"SCRIPT", "LOAD", text};
	size_t lens[3] = {6, 4, strlen(text)};
	redisReply *r = redisCommandArgv(rc, 3, argv, lens);
	if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
		snprintf(err, errlen, "SCRIPT LOAD: %s",
		         !r ? rc->errstr : r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
		if (r)
			freeReplyObject(r);
		return -1;
	}
	memcpy(sha, r->str, 40);
	sha[40] = 0;
	freeReplyObject(r);
	return 0;
}

static void be_close(pconn **cp)
{
	pconn *c = *cp;
	if (!c)
		return;
	*cp = NULL;
	if (c->rc)
		redisFree(c->rc);
	free(c->pend);
	free(c->js);
	free(c);
}

static int be_open(const void *cfgp, const persist_host *host, pconn **out, char *err,
                   size_t errlen)
{
	const redis_pool_cfg *cfg = cfgp;
	pconn *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	c->cfg = cfg;
	c->host = host;
	c->rc = rds_connect(cfg, err, errlen);
	if (!c->rc || load_script(c->rc, ACK_SCRIPT, c->sha_ack, err, errlen) ||
	    load_script(c->rc, DISC_SCRIPT, c->sha_disc, err, errlen)) {
		be_close(&c);
		return -1;
	}
	*out = c;
	return 0;
}

static int be_ping(pconn *c)
{
	redisReply *r = redisCommand(c->rc, "PING");
	int ok = r && r->type == REDIS_REPLY_STATUS;
	if (r)
		freeReplyObject(r);
	return ok ? 0 : -1;
}

static const char *be_last_error(pconn *c) { return c->err; }

/* ---------------------------------------------------------------- run_batch */

static int run_job(pconn *c, uint32_t i, pjob *j)
{
	if (!j->rule->func)
		return redis_raw_run(c, i, j);
	switch (j->rule->func->id) {
	case RF_CLIENT_CONNECTED: return redis_client_connected(c, i, j);
	case RF_CLIENT_DISCONNECTED: return redis_client_disconnected(c, i, j);
	case RF_SUBSCRIBE_LOOKUP: return redis_subscribe_lookup(c, i, j);
	case RF_FETCH_QUEUE: return redis_message_fetch(c, i, j, true);
	case RF_FETCH_PUBSUB: return redis_message_fetch(c, i, j, false);
	case RF_RETAIN_LOOKUP: return redis_retain_lookup(c, i, j);
	case RF_MESSAGE_PUBLISH:
	case RF_MESSAGE_STORE: return redis_message_store(c, i, j);
	case RF_MESSAGE_RETAIN: return redis_message_retain(c, i, j);
	case RF_RETAIN_DELETE: return redis_retain_delete(c, i, j);
	case RF_ACKED_QUEUE: return redis_message_acked(c, i, j, true);
	case RF_ACKED_PUBSUB: return redis_message_acked(c, i, j, false);
	case RF_ACKED_DELETE: return redis_acked_delete(c, i, j);
	}
	rds_outcome(c, i, RJ_FAIL, "unknown function", 16);
	return 0;
}

static int be_run_batch(pconn *c, pjob **jobs, size_t n)
{
	if (n > c->jscap) {
		rjob *nj = realloc(c->js, n * sizeof(*nj));
		if (!nj) {
			for (size_t i = 0; i < n; i++)
				if (jobs[i]->status == PJOB_PENDING)
					jobs[i]->status = PJOB_RETRY;
			return 0;
		}
		c->js = nj;
		c->jscap = n;
	}
	memset(c->js, 0, n * sizeof(*c->js));
	c->jobs = jobs;
	c->npend = 0;
	c->broken = false;
	int rc = 0;
	size_t i = 0;
	for (; i < n; i++) {
		if (jobs[i]->status != PJOB_PENDING)
			continue;
		if (run_job(c, (uint32_t)i, jobs[i])) {
			rc = -1;
			break;
		}
	}
	if (rc == 0 && rds_flush(c))
		rc = -1;
	for (size_t k = 0; k < n; k++) {
		pjob *j = jobs[k];
		if (j->status != PJOB_PENDING)
			continue;
		if (k >= i && rc) { /* never started: retried on the next connection */
			j->status = PJOB_RETRY;
			continue;
		}
		int o = c->js[k].outcome;
		if (o == RJ_OK && c->js[k].left)
			o = RJ_RETRY; /* a reply never read */
		j->status = o == RJ_OK ? PJOB_OK : o == RJ_FAIL ? PJOB_FAILED : PJOB_RETRY;
		if (j->status == PJOB_RETRY)
			presult_clear(j->result);
	}
	c->jobs = NULL;
	return rc || c->broken ? -1 : 0;
}

/* ---------------------------------------------------------------- the table */

#define H(x) HOOK_BIT(x)

static const pfunc redis_funcs[RF__COUNT] = {
	{"on_client_connected", H(HOOK_CLIENT_CONNECTED), PFUNC_WRITE, RF_CLIENT_CONNECTED, 0, 0,
	 applies_not_implicit},
	{"on_client_disconnected", H(HOOK_CLIENT_DISCONNECTED), PFUNC_WRITE, RF_CLIENT_DISCONNECTED,
	 0, 0, applies_not_implicit},
	{"on_subscribe_lookup", H(HOOK_CLIENT_CONNECTED) | H(HOOK_SESSION_CREATED), PFUNC_LOOKUP,
	 RF_SUBSCRIBE_LOOKUP, PRESULT_SUBS, 0, applies_not_implicit},
	{"on_message_fetch_for_queue", H(HOOK_SESSION_SUBSCRIBED), PFUNC_LOOKUP, RF_FETCH_QUEUE,
	 PRESULT_MSGS, 0, applies_not_implicit},
	{"on_message_fetch_for_pubsub", H(HOOK_SESSION_SUBSCRIBED), PFUNC_LOOKUP, RF_FETCH_PUBSUB,
	 PRESULT_MSGS, 0, applies_not_implicit},
	{"on_retain_lookup", H(HOOK_SESSION_SUBSCRIBED), PFUNC_LOOKUP, RF_RETAIN_LOOKUP,
	 PRESULT_RETAINED, 0, applies_retain_lookup},
	{"on_message_publish", H(HOOK_MESSAGE_PUBLISH), PFUNC_WRITE, RF_MESSAGE_PUBLISH, 0, 0,
	 applies_publish},
	{"on_message_store", H(HOOK_MESSAGE_PUBLISH), PFUNC_WRITE, RF_MESSAGE_STORE, 0, 0,
	 applies_store},
	{"on_message_retain", H(HOOK_MESSAGE_PUBLISH), PFUNC_WRITE, RF_MESSAGE_RETAIN, 0, 1,
	 applies_retain},
	{"on_retain_delete", H(HOOK_MESSAGE_PUBLISH), PFUNC_WRITE, RF_RETAIN_DELETE, 0, 1,
	 applies_retain_delete},
	{"on_message_acked_for_queue", H(HOOK_MESSAGE_ACKED), PFUNC_WRITE, RF_ACKED_QUEUE, 0, 0,
	 applies_acked},
	{"on_message_acked_for_pubsub", H(HOOK_MESSAGE_ACKED), PFUNC_WRITE, RF_ACKED_PUBSUB, 0, 0,
	 applies_acked},
	{"on_acked_delete", H(HOOK_SESSION_UNSUBSCRIBED), PFUNC_WRITE, RF_ACKED_DELETE, 0, 0,
	 applies_not_implicit},
};

static const cfg_key pool_keys[] = {
	{"server", CFG_STRING, "127.0.0.1:6379", 0, 0, NULL, offsetof(redis_pool_cfg, server), NULL,
	 0,
	 "The Redis server, `host:port`. With `sentinel` set: the sentinels, "
	 "`host:port[,host:port...]`, asked in order for the master's address."},
	{"sentinel", CFG_STRING, "", 0, 0, NULL, offsetof(redis_pool_cfg, sentinel), NULL, 0,
	 "The master name Sentinel monitors (`mymaster`). Empty: `server` is the Redis server itself. "
	 "After a failover the connections find the new master on their own."},
	{"database", CFG_INT, "0", 0, 1000000, NULL, offsetof(redis_pool_cfg, database), NULL, 0,
	 "The database number (SELECT)."},
	{"username", CFG_STRING, "", 0, 0, NULL, offsetof(redis_pool_cfg, username), NULL, 0,
	 "The ACL user name (Redis 6 and later); empty: the default user."},
	{"password", CFG_STRING, "", 0, 0, NULL, offsetof(redis_pool_cfg, password), NULL,
	 CFG_F_SECRET, "The password (AUTH); empty: none."},
	{"channel", CFG_STRING, "", 0, 0, NULL, offsetof(redis_pool_cfg, channel), NULL, 0,
	 "A channel the broker SUBSCRIBEs to: a message `{\"type\": \"subscribe\"|\"unsubscribe\", "
	 "\"topic\": ..., \"clientid\": ..., \"qos\": ...}` PUBLISHed there (un)subscribes that "
	 "client if it is online. Empty: none."},
	{"channel_store", CFG_BOOL, "off", 0, 0, NULL, offsetof(redis_pool_cfg, channel_store), NULL,
	 0,
	 "Also write each channel event into the client's `mqtt:sub:<clientid>` hash (HSET on "
	 "subscribe, HDEL on unsubscribe), so `on_subscribe_lookup` applies it when the client "
	 "next connects - whether or not it is online now."},
	{"connect_timeout", CFG_DURATION, "3s", 1, 600000, NULL,
	 offsetof(redis_pool_cfg, connect_timeout_ms), NULL, 0,
	 "How long connecting to Redis (or a sentinel) may take."},
	{"command_timeout", CFG_DURATION, "10s", 1, 600000, NULL,
	 offsetof(redis_pool_cfg, command_timeout_ms), NULL, 0,
	 "How long a connection waits for a reply before it counts as lost (the batch is then "
	 "retried on a new connection)."},
};

static int be_pool_check(const void *cfgp, char *err, size_t errlen)
{
	const redis_pool_cfg *cfg = cfgp;
	if (!cfg->server || !cfg->server[0]) {
		snprintf(err, errlen, "the pool needs a server (.server = host:port)");
		return -1;
	}
	const char *s = cfg->server;
	bool sentinel = cfg->sentinel && cfg->sentinel[0];
	while (*s) {
		const char *comma = strchr(s, ',');
		size_t n = comma ? (size_t)(comma - s) : strlen(s);
		while (n && *s == ' ') {
			s++;
			n--;
		}
		char h[256];
		int p;
		if (backend_parse_addr(s, n, h, sizeof(h), &p)) {
			snprintf(err, errlen, "server: \"%.*s\" is not host:port", (int)(n > 100 ? 100 : n),
			         s);
			return -1;
		}
		if (comma && !sentinel) {
			snprintf(err, errlen,
			         "server lists several addresses but no sentinel master name is set "
			         "(.sentinel = mymaster); a pool talks to one Redis server");
			return -1;
		}
		if (!comma)
			break;
		s = comma + 1;
	}
	return 0;
}

const backend_type redis_backend = {
	.api = PERSIST_BACKEND_API,
	.flags = BACKEND_F_MSG_EXPIRY,
	.name = "redis",
	.title = "Redis",
	.pool_keys = pool_keys,
	.n_pool_keys = sizeof(pool_keys) / sizeof(pool_keys[0]),
	.pool_cfg_size = sizeof(redis_pool_cfg),
	.funcs = redis_funcs,
	.nfuncs = RF__COUNT,
	.raw_key = "commands",
	.default_pool_size = 8,
	.raw_compile = redis_raw_compile,
	.raw_free = redis_raw_free,
	.pool_check = be_pool_check,
	.open = be_open,
	.close = be_close,
	.ping = be_ping,
	.run_batch = be_run_batch,
	.last_error = be_last_error,
	.service_start = redis_channel_start,
	.service_stop = redis_channel_stop,
	.service_metrics = redis_channel_metrics,
};
