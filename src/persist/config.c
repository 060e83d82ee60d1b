/*
 * config.c - the `backend.<db>.*` keys of every backend, and rule parsing.
 *
 * Each backend gets its rows built at start-up from one template list (the
 * framework's own keys: rules, global options, pool queueing) plus the
 * backend's pool keys (`database`, `server`, ...). Pool keys have a `<pool>`
 * placeholder, so `backend.sqlite.pool1.database` and
 * `backend.sqlite.archive.database` configure two pools.
 *
 * A rule line is parsed and checked when it is read, so a bad line is
 * reported with its own file and line: invalid JSON, an unknown key, an
 * action with both `function` and a raw action, a function the backend does
 * not have or that cannot run on that hook point, a malformed topic filter,
 * a raw statement that does not compile, a key the backend has no use for
 * (`expired_time` is Redis's, `payload_format` MongoDB's), a `topic` on a
 * hook point whose events have none (client.connected, client.disconnected,
 * session.created: it would never match). None of these is ignored with a
 * warning: the spec's examples use them only where they mean something.
 * References to pools are checked in persist_config_finish, when every file
 * has been read.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "persist/internal.h"

/* ---------------------------------------------------------------- hook points */

static const char *const hook_names[HOOK__COUNT] = {
	"client.connected",   "client.disconnected", "session.created", "session.subscribed",
	"session.unsubscribed", "message.publish",   "message.delivered", "message.acked",
};

const char *hook_point_name(int hp)
{
	return hp >= 0 && hp < HOOK__COUNT ? hook_names[hp] : NULL;
}

int hook_point_parse(const char *name)
{
	for (int i = 0; i < HOOK__COUNT; i++)
		if (strcmp(name, hook_names[i]) == 0)
			return i;
	return -1;
}

/* ---------------------------------------------------------------- pools */

/* The framework's pool keys: index = pkey_target.common. */
enum {
	PK_POOL_SIZE,
	PK_BATCH_SIZE,
	PK_BATCH_TIME,
	PK_MAX_QUEUE,
	PK_MAX_QUEUE_BYTES,
	PK_RETRY_MAX,
	PK_HEALTH,
	PK_SPILL_DIR,
	PK_SPILL_AFTER,
	PK_MAX_SPILL,
	PK__COUNT
};

static const cfg_key common_pool_keys[PK__COUNT] = {
	{"pool_size", CFG_INT, NULL, 1, 256, NULL, 0, NULL, 0,
	 "Connections (each with its own thread and queue) in the pool. A client's jobs always go to "
	 "the same connection, chosen by its client id, so they run in the order they happened. "
	 "Default: the backend's (SQLite: 1, since SQLite has a single writer)."},
	{"batch_size", CFG_INT, "100", 1, 100000, NULL, 0, NULL, 0,
	 "Most jobs one connection runs in one transaction (one commit)."},
	{"batch_time", CFG_DURATION, "0ms", 0, 10000, NULL, 0, NULL, 0,
	 "How long a connection waits for a batch to fill before running it. 0: run what is queued "
	 "at once (jobs arriving while a batch runs form the next batch, so batches grow with load "
	 "without adding latency when idle)."},
	{"max_queue", CFG_INT, "1000000", 1, 1000000000ll, NULL, 0, NULL, 0,
	 "Most jobs queued per connection while the database is slow or away. When full, the oldest "
	 "queued job is dropped and counted (`dropped.queue_full`)."},
	{"max_queue_bytes", CFG_SIZE, "256MB", 1024 * 1024, 64ll * 1024 * 1024 * 1024, NULL, 0, NULL,
	 0, "Most bytes of jobs (payloads included) queued per connection; beyond it the oldest "
	    "queued job is dropped and counted."},
	{"retry_max_backoff", CFG_DURATION, "10s", 10, 3600000, NULL, 0, NULL, 0,
	 "Longest wait between retries when the database fails with a recoverable error (gone, "
	 "locked, full, read-only). Waits start at 100 ms and double up to this."},
	{"health_check_interval", CFG_DURATION, "15s", 100, 3600000, NULL, 0, NULL, 0,
	 "How often an idle connection is checked and, if broken, reopened."},
	{"spill_dir", CFG_PATH, "data/spill", 0, 0, NULL, 0, NULL, 0,
	 "Directory of the spill files: when more than `spill_after` jobs wait for a connection "
	 "(the database is slow or away), the oldest are moved from memory to a file there, and "
	 "written to the database from it, in order, when it is back. A spill file left by a "
	 "previous run is replayed at start. Empty: never spill (memory only)."},
	{"spill_after", CFG_INT, "10000", 1, 1000000000ll, NULL, 0, NULL, 0,
	 "Jobs a connection keeps in memory before it spills the oldest to disk."},
	{"max_spill_bytes", CFG_SIZE, "1GB", 1024 * 1024, 1024ll * 1024 * 1024 * 1024, NULL, 0, NULL,
	 0, "Largest spill file per connection. When it is full, jobs stay in memory (bounded by "
	    "`max_queue`, dropping the oldest)."},
};

static ppool *pool_get(pbackend *be, const char *name, const cfg_value *v, char *err,
                       size_t errlen)
{
	for (ppool *pl = be->pools; pl; pl = pl->next)
		if (strcmp(pl->name, name) == 0)
			return pl;
	if (strcmp(name, "hook") == 0) {
		snprintf(err, errlen, "\"hook\" cannot be a pool name");
		return NULL;
	}
	if (strlen(name) >= sizeof(((ppool *)0)->name)) {
		snprintf(err, errlen, "pool name is longer than 63 characters");
		return NULL;
	}
	ppool *pl = calloc(1, sizeof(*pl));
	void *cfg = calloc(1, be->type->pool_cfg_size ? be->type->pool_cfg_size : 1);
	if (!pl || !cfg) {
		free(pl);
		free(cfg);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pl->be = be;
	pl->cfg = cfg;
	snprintf(pl->name, sizeof(pl->name), "%s", name);
	if (v && v->file) {
		pl->file = strdup(v->file);
		pl->line = v->line;
	}
	pl->pool_size = be->type->default_pool_size > 0 ? be->type->default_pool_size : 8;
	pl->batch_size = 100;
	pl->batch_time_ms = 0;
	pl->max_queue = 1000000;
	pl->max_queue_bytes = 256ull * 1024 * 1024;
	pl->retry_max_ms = 10000;
	pl->health_ms = 15000;
	pl->spill_dir = strdup("data/spill");
	pl->spill_after = 10000;
	pl->max_spill_bytes = 1024ull * 1024 * 1024;
	/* the backend's own defaults */
	for (size_t i = 0; i < be->type->n_pool_keys; i++) {
		const cfg_key *k = &be->type->pool_keys[i];
		if (!k->def)
			continue;
		char *at = (char *)cfg + k->offset;
		switch (k->type) {
		case CFG_STRING:
		case CFG_PATH:
			*(char **)at = strdup(k->def);
			break;
		case CFG_INT:
			cfg_parse_int(k->def, (int64_t *)at);
			break;
		case CFG_BOOL:
			cfg_parse_bool(k->def, (bool *)at);
			break;
		case CFG_SIZE:
			cfg_parse_size(k->def, (uint64_t *)at);
			break;
		case CFG_DURATION:
			cfg_parse_duration_ms(k->def, (uint64_t *)at);
			break;
		case CFG_ADDR:
			if (cfg_parse_addr(k->def, (cfg_addr *)at) == 0)
				((cfg_addr *)at)->set = true;
			break;
		default:
			break;
		}
	}
	ppool **pp = &be->pools;
	while (*pp)
		pp = &(*pp)->next;
	*pp = pl;
	return pl;
}

static int set_pool_key(void *target, const char *const *cap, int ncap, const cfg_value *v,
                        char *err, size_t errlen)
{
	pkey_target *t = target;
	ppool *pl = pool_get(t->be, cap[0], v, err, errlen);
	if (!pl)
		return -1;
	switch (t->common) {
	case PK_POOL_SIZE: pl->pool_size = v->v.i; return 0;
	case PK_BATCH_SIZE: pl->batch_size = v->v.i; return 0;
	case PK_BATCH_TIME: pl->batch_time_ms = v->v.u; return 0;
	case PK_MAX_QUEUE: pl->max_queue = v->v.i; return 0;
	case PK_MAX_QUEUE_BYTES: pl->max_queue_bytes = v->v.u; return 0;
	case PK_RETRY_MAX: pl->retry_max_ms = v->v.u; return 0;
	case PK_HEALTH: pl->health_ms = v->v.u; return 0;
	case PK_SPILL_DIR: {
		char *d = strdup(v->text);
		if (!d) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		free(pl->spill_dir);
		pl->spill_dir = d;
		return 0;
	}
	case PK_SPILL_AFTER: pl->spill_after = v->v.i; return 0;
	case PK_MAX_SPILL: pl->max_spill_bytes = v->v.u; return 0;
	default: break;
	}
	char *at = (char *)pl->cfg + t->inner->offset;
	switch (v->type) {
	case CFG_STRING:
	case CFG_PATH: {
		char *s = strdup(v->text);
		if (!s) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		free(*(char **)at);
		*(char **)at = s;
		return 0;
	}
	case CFG_BOOL: *(bool *)at = v->v.b; return 0;
	case CFG_INT: *(int64_t *)at = v->v.i; return 0;
	case CFG_SIZE:
	case CFG_DURATION: *(uint64_t *)at = v->v.u; return 0;
	case CFG_ENUM: *(int *)at = v->v.e; return 0;
	case CFG_ADDR:
		*(cfg_addr *)at = v->v.addr;
		((cfg_addr *)at)->set = true;
		return 0;
	case CFG_DOUBLE: *(double *)at = v->v.d; return 0;
	}
	return 0;
}

/* ---------------------------------------------------------------- rules */

static prule *rule_find(pbackend *be, int point, int64_t n)
{
	for (size_t i = 0; i < be->nrules; i++)
		if (be->rule_vec[i]->point == point && be->rule_vec[i]->n == n)
			return be->rule_vec[i];
	return NULL;
}

static void rule_free(pbackend *be, prule *r)
{
	if (!r)
		return;
	if (r->raw && be->type->raw_free)
		be->type->raw_free(r->raw);
	free(r->raw_texts_json);
	free(r->topic);
	free(r->pool_name);
	free(r->payload_format);
	free(r->file);
	free(r);
}

static int parse_count(json_t *v, int64_t *out)
{
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		*out = json_integer_value(v);
		return 0;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		if (strcmp(s, "infinity") == 0) {
			*out = INT64_MAX;
			return 0;
		}
		if (cfg_parse_int(s, out) == 0 && *out >= 0)
			return 0;
	}
	return -1;
}

static int parse_range(json_t *v, uint64_t *out)
{
	if (json_is_integer(v) && json_integer_value(v) >= 0) {
		uint64_t s = (uint64_t)json_integer_value(v); /* a bare number: seconds */
		*out = s > (uint64_t)INT64_MAX / 1000u ? UINT64_MAX : s * 1000u;
		return 0;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		if (strcmp(s, "infinity") == 0) {
			*out = UINT64_MAX;
			return 0;
		}
		return cfg_parse_duration_ms(s, out);
	}
	return -1;
}

static int func_allowed_list(const backend_type *t, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = 0;
	for (size_t i = 0; i < t->nfuncs && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? ", " : "", t->funcs[i].name);
	return 0;
}

static void hooks_of(const pfunc *f, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = 0;
	for (int i = 0; i < HOOK__COUNT && o < len; i++)
		if (f->hooks & (1u << i))
			o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? " or " : "", hook_names[i]);
}

/* Parses the action object into r. */
static int parse_action(pbackend *be, prule *r, json_t *action, char *err, size_t errlen)
{
	const backend_type *t = be->type;
	if (!json_is_object(action)) {
		snprintf(err, errlen, "\"action\" must be an object such as {\"function\": \"...\"}");
		return -1;
	}
	json_t *fn = json_object_get(action, "function");
	json_t *raw = t->raw_key ? json_object_get(action, t->raw_key) : NULL;
	const char *k;
	json_t *v;
	json_object_foreach(action, k, v)
	{
		if (strcmp(k, "function") && !(t->raw_key && strcmp(k, t->raw_key) == 0)) {
			if (t->raw_key)
				snprintf(err, errlen,
				         "unknown key \"%s\" in \"action\" (a %s action has \"function\" or "
				         "\"%s\")",
				         k, t->name, t->raw_key);
			else
				snprintf(err, errlen,
				         "unknown key \"%s\" in \"action\" (a %s action has \"function\")", k,
				         t->name);
			return -1;
		}
	}
	if (fn && raw) {
		snprintf(err, errlen, "\"action\" has both \"function\" and \"%s\": use one rule for each",
		         t->raw_key);
		return -1;
	}
	if (!fn && !raw) {
		if (t->raw_key)
			snprintf(err, errlen, "\"action\" needs \"function\" or \"%s\"", t->raw_key);
		else
			snprintf(err, errlen, "\"action\" needs \"function\"");
		return -1;
	}
	if (fn) {
		if (!json_is_string(fn)) {
			snprintf(err, errlen, "\"function\" must be a string");
			return -1;
		}
		const char *name = json_string_value(fn);
		for (size_t i = 0; i < t->nfuncs; i++) {
			if (strcmp(t->funcs[i].name, name))
				continue;
			if (!(t->funcs[i].hooks & (1u << r->point))) {
				char where[160];
				hooks_of(&t->funcs[i], where, sizeof(where));
				snprintf(err, errlen, "function %s cannot run on %s (it runs on %s)", name,
				         hook_names[r->point], where);
				return -1;
			}
			r->func = &t->funcs[i];
			return 0;
		}
		char list[400];
		func_allowed_list(t, list, sizeof(list));
		snprintf(err, errlen, "unknown function \"%.80s\" for backend %s (it has: %s)", name,
		         t->name, list);
		return -1;
	}
	/* a raw action: one text or a list of texts */
	const char *texts[64];
	size_t n = 0;
	if (json_is_string(raw)) {
		texts[n++] = json_string_value(raw);
	} else if (json_is_array(raw)) {
		size_t i;
		json_t *e;
		json_array_foreach(raw, i, e)
		{
			if (!json_is_string(e)) {
				snprintf(err, errlen, "\"%s\" must be a list of strings", t->raw_key);
				return -1;
			}
			if (n == 64) {
				snprintf(err, errlen, "\"%s\" has more than 64 entries", t->raw_key);
				return -1;
			}
			texts[n++] = json_string_value(e);
		}
	} else {
		snprintf(err, errlen, "\"%s\" must be a string or a list of strings", t->raw_key);
		return -1;
	}
	if (n == 0) {
		snprintf(err, errlen, "\"%s\" is empty", t->raw_key);
		return -1;
	}
	if (!t->raw_compile) {
		snprintf(err, errlen, "backend %s has no raw actions", t->name);
		return -1;
	}
	char e2[300] = "";
	if (t->raw_compile(texts, n, &r->raw, e2, sizeof(e2))) {
		snprintf(err, errlen, "\"%s\": %s", t->raw_key, e2);
		return -1;
	}
	return 0;
}

static int set_rule(void *target, const char *const *cap, int ncap, const cfg_value *v,
                    char *err, size_t errlen)
{
	pbackend *be = target;
	int point = hook_point_parse(cap[0]);
	if (point < 0) {
		snprintf(err, errlen,
		         "unknown hook point \"%s\" (use client.connected, client.disconnected, "
		         "session.created, session.subscribed, session.unsubscribed, message.publish, "
		         "message.delivered or message.acked)",
		         cap[0]);
		return -1;
	}
	int64_t n;
	if (cfg_parse_int(cap[1], &n) || n < 0) {
		snprintf(err, errlen, "the rule number \"%s\" is not a whole number", cap[1]);
		return -1;
	}
	json_error_t je;
	json_t *root = json_loads(v->text, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		snprintf(err, errlen, "invalid JSON at column %d: %s", je.column, je.text);
		return -1;
	}
	prule *r = calloc(1, sizeof(*r));
	if (!r) {
		json_decref(root);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	r->be = be;
	r->point = (uint8_t)point;
	r->n = n;
	r->max_returned_count = -1; /* -1: the backend's global value */
	r->time_range_ms = 0;
	bool have_range = false, have_opts = false;
	snprintf(r->key, sizeof(r->key), "backend.%s.hook.%s.%lld", be->type->name, cap[0],
	         (long long)n);
	if (!json_is_object(root)) {
		snprintf(err, errlen, "a rule must be a JSON object such as {\"action\": ..., \"pool\": ...}");
		goto fail;
	}
	const char *k;
	json_t *val;
	json_object_foreach(root, k, val)
	{
		if (strcmp(k, "topic") == 0) {
			if (!json_is_string(val)) {
				snprintf(err, errlen, "\"topic\" must be a string");
				goto fail;
			}
			mqtt_str f = {(const uint8_t *)json_string_value(val),
			              (uint32_t)json_string_length(val)};
			if (!mqtt_topic_filter_valid(f) || memchr(f.p, 0, f.len)) {
				snprintf(err, errlen, "\"topic\": \"%.100s\" is not a valid topic filter",
				         json_string_value(val));
				goto fail;
			}
			if (point == HOOK_CLIENT_CONNECTED || point == HOOK_CLIENT_DISCONNECTED ||
			    point == HOOK_SESSION_CREATED) {
				/* their events carry no topic: the filter would never match */
				snprintf(err, errlen,
				         "\"topic\" cannot be used on %s: its events have no topic, so the "
				         "rule would never run (remove \"topic\")",
				         hook_names[point]);
				goto fail;
			}
			r->topic = strndup((const char *)f.p, f.len);
			r->topic_len = f.len;
		} else if (strcmp(k, "pool") == 0) {
			if (!json_is_string(val) || json_string_length(val) == 0) {
				snprintf(err, errlen, "\"pool\" must be a pool name such as \"pool1\"");
				goto fail;
			}
			r->pool_name = strdup(json_string_value(val));
		} else if (strcmp(k, "action") == 0) {
			/* checked below, once the point is known */
		} else if (strcmp(k, "offline_opts") == 0) {
			have_opts = true;
			if (!json_is_object(val)) {
				snprintf(err, errlen, "\"offline_opts\" must be an object");
				goto fail;
			}
			const char *ok;
			json_t *ov;
			json_object_foreach(val, ok, ov)
			{
				if (strcmp(ok, "max_returned_count") == 0) {
					if (parse_count(ov, &r->max_returned_count)) {
						snprintf(err, errlen,
						         "\"offline_opts\".\"max_returned_count\" must be a "
						         "non-negative number or \"infinity\"");
						goto fail;
					}
				} else if (strcmp(ok, "time_range") == 0) {
					if (parse_range(ov, &r->time_range_ms)) {
						snprintf(err, errlen,
						         "\"offline_opts\".\"time_range\" must be a duration such "
						         "as \"2h\" or \"infinity\"");
						goto fail;
					}
					have_range = true;
				} else {
					snprintf(err, errlen,
					         "unknown key \"%s\" in \"offline_opts\" (it has "
					         "max_returned_count and time_range)",
					         ok);
					goto fail;
				}
			}
		} else if (strcmp(k, "expired_time") == 0) {
			/* Redis's key (its message hashes' expiry); no other backend
			 * has a use for it, so elsewhere it is an error, not ignored */
			if (!(be->type->flags & BACKEND_F_MSG_EXPIRY)) {
				snprintf(err, errlen,
				         "\"expired_time\" is a Redis rule key: no %s function or raw action "
				         "uses it (remove it)",
				         be->type->title);
				goto fail;
			}
			if (!json_is_integer(val) || json_integer_value(val) < 0) {
				snprintf(err, errlen, "\"expired_time\" must be a number of seconds");
				goto fail;
			}
			r->expired_time_s = json_integer_value(val);
		} else if (strcmp(k, "payload_format") == 0) {
			/* MongoDB's key (mongo_json | plain_text); an error elsewhere */
			if (strcmp(be->type->name, "mongo") != 0) {
				snprintf(err, errlen,
				         "\"payload_format\" is a MongoDB rule key: no %s function or raw "
				         "action uses it (remove it)",
				         be->type->title);
				goto fail;
			}
			if (!json_is_string(val)) {
				snprintf(err, errlen, "\"payload_format\" must be a string");
				goto fail;
			}
			r->payload_format = strdup(json_string_value(val));
		} else {
			snprintf(err, errlen,
			         "unknown key \"%.60s\" in the rule (a rule has topic, action, pool, "
			         "offline_opts%s)",
			         k, "");
			goto fail;
		}
	}
	json_t *action = json_object_get(root, "action");
	if (!action) {
		snprintf(err, errlen, "the rule has no \"action\"");
		goto fail;
	}
	if (parse_action(be, r, action, err, errlen))
		goto fail;
	/* only the fetch functions read offline_opts: anywhere else it would be
	 * silently ignored, so it is an error */
	if (have_opts && (!r->func || strncmp(r->func->name, "on_message_fetch", 16) != 0)) {
		snprintf(err, errlen,
		         "\"offline_opts\" applies only to on_message_fetch functions, not to %s "
		         "(remove it)",
		         r->func ? r->func->name : "a raw action");
		goto fail;
	}
	if (!have_range)
		r->time_range_ms = 0; /* 0: the backend's global value */
	else if (r->time_range_ms == 0)
		r->time_range_ms = UINT64_MAX;
	if (v->file) {
		r->file = strdup(v->file);
		r->line = v->line;
	}
	json_decref(root);
	/* the same key twice: the later line wins */
	prule *old = rule_find(be, point, n);
	if (old) {
		for (size_t i = 0; i < be->nrules; i++)
			if (be->rule_vec[i] == old)
				be->rule_vec[i] = r;
		rule_free(be, old);
		return 0;
	}
	if (be->nrules == be->caprules) {
		size_t nc = be->caprules ? be->caprules * 2 : 16;
		prule **nv = realloc(be->rule_vec, nc * sizeof(*nv));
		if (!nv) {
			snprintf(err, errlen, "out of memory");
			rule_free(be, r);
			return -1;
		}
		be->rule_vec = nv;
		be->caprules = nc;
	}
	be->rule_vec[be->nrules++] = r;
	return 0;
fail:
	json_decref(root);
	rule_free(be, r);
	return -1;
}

/* ---------------------------------------------------------------- registration */

static const char *const delivery_modes[] = {"async", "sync", NULL};

static char *dupf(const char *fmt, const char *a)
{
	size_t n = (size_t)snprintf(NULL, 0, fmt, a) + 1;
	char *s = malloc(n);
	if (s)
		snprintf(s, n, fmt, a);
	return s;
}

int persist_config_register(persist *p, cfg_registry *reg, const backend_type *t)
{
	if (t->api != PERSIST_BACKEND_API) {
		fprintf(stderr, "persist: backend %s has API %d, expected %d\n", t->name, t->api,
		        PERSIST_BACKEND_API);
		return -1;
	}
	pbackend *be = calloc(1, sizeof(*be));
	if (!be)
		return -1;
	be->bus = p;
	be->type = t;
	be->max_returned_count = INT64_MAX;
	be->time_range_ms = UINT64_MAX;
	pbackend **pp = &p->backends;
	while (*pp)
		pp = &(*pp)->next;
	*pp = be;

	size_t nglobal = (t->flags & BACKEND_F_MSG_EXPIRY) ? 5 : 4;
	size_t n = nglobal + PK__COUNT + t->n_pool_keys;
	be->rows = calloc(n, sizeof(cfg_key));
	be->targets = calloc(PK__COUNT + t->n_pool_keys, sizeof(pkey_target));
	if (!be->rows || !be->targets)
		return -1;
	cfg_key *rows = be->rows;
	rows[0] = (cfg_key){dupf("backend.%s.hook.<hookpoint...>.<n>", t->name), CFG_STRING, NULL, 0,
	                    0, NULL, 0, set_rule, 0,
	                    "A rule: binds a hook point to a built-in function or a raw action, as a "
	                    "JSON object `{\"topic\": filter, \"action\": {...}, \"pool\": name, "
	                    "\"offline_opts\": {...}}`. Rules of one hook point run in `<n>` order. "
	                    "See docs/persistence.md."};
	rows[1] = (cfg_key){dupf("backend.%s.max_returned_count", t->name), CFG_INT, "infinity", 0,
	                    INT64_MAX, NULL, offsetof(pbackend, max_returned_count), NULL,
	                    CFG_F_INFINITY,
	                    "Most stored messages one fetch delivers (oldest unread first), unless "
	                    "a rule's `offline_opts` says otherwise. `infinity`: no limit."};
	rows[2] = (cfg_key){dupf("backend.%s.time_range", t->name), CFG_DURATION, "infinity", 0,
	                    INT64_MAX, NULL, offsetof(pbackend, time_range_ms), NULL, CFG_F_INFINITY,
	                    "Only stored messages younger than this are fetched (`2h`, `30m`), "
	                    "unless a rule's `offline_opts` says otherwise. `infinity`: no limit."};
	rows[3] = (cfg_key){dupf("backend.%s.delivery_mode", t->name), CFG_ENUM, "async", 0, 0,
	                    delivery_modes, offsetof(pbackend, delivery_mode), NULL, 0,
	                    "`async`: a publisher's PUBACK/PUBREC is sent at once and the write is "
	                    "queued (the original broker's behaviour). `sync`: it is sent only after "
	                    "every `message.publish` write of this backend for that message has "
	                    "committed; many clients' writes share one commit."};
	if (t->flags & BACKEND_F_MSG_EXPIRY)
		rows[4] = (cfg_key){dupf("backend.%s.msg.expired_after", t->name), CFG_INT, "3600",
		                    INT64_MIN, INT64_MAX, NULL, offsetof(pbackend, msg_expired_after_s),
		                    NULL, 0,
		                    "Seconds a message stored by on_message_publish / on_message_store "
		                    "is kept (the key expires), unless a rule's `expired_time` says "
		                    "otherwise. A value <= 0 takes the default, 3600."};
	size_t k = nglobal;
	for (int i = 0; i < PK__COUNT; i++, k++) {
		rows[k] = common_pool_keys[i];
		char tmp[128];
		snprintf(tmp, sizeof(tmp), "backend.%%s.<pool>.%s", common_pool_keys[i].name);
		rows[k].name = dupf(tmp, t->name);
		rows[k].set = set_pool_key;
		be->targets[i] = (pkey_target){be, &common_pool_keys[i], i};
	}
	for (size_t i = 0; i < t->n_pool_keys; i++, k++) {
		rows[k] = t->pool_keys[i];
		char tmp[128];
		snprintf(tmp, sizeof(tmp), "backend.%%s.<pool>.%s", t->pool_keys[i].name);
		rows[k].name = dupf(tmp, t->name);
		rows[k].set = set_pool_key;
		rows[k].offset = 0;
		be->targets[PK__COUNT + i] = (pkey_target){be, &t->pool_keys[i], -1};
	}
	be->nrows = n;
	for (size_t i = 0; i < n; i++)
		if (!rows[i].name)
			return -1;
	char section[96], intro[512];
	snprintf(section, sizeof(section), "Backend: %s", t->title);
	snprintf(intro, sizeof(intro),
	         "Keys of the %s backend (`backend.%s.*`). `<pool>` is a pool name of your choice "
	         "(`pool1` in the examples); rules name the pool they use.",
	         t->title, t->name);
	be->name_buf = malloc(strlen(section) + 1 + strlen(intro) + 1);
	if (!be->name_buf)
		return -1;
	strcpy(be->name_buf, section);
	char *intro_s = be->name_buf + strlen(section) + 1;
	strcpy(intro_s, intro);
	/* globals (with rules) target the backend; each pool key its own target */
	if (cfg_register(reg, be->name_buf, intro_s, rows, nglobal, be))
		return -1;
	for (size_t i = 0; i < PK__COUNT + t->n_pool_keys; i++)
		if (cfg_register(reg, be->name_buf, NULL, &rows[nglobal + i], 1, &be->targets[i]))
			return -1;
	return 0;
}

/* ---------------------------------------------------------------- finishing */

static int cmp_rule(const void *a, const void *b)
{
	const prule *x = *(prule *const *)a, *y = *(prule *const *)b;
	if (x->point != y->point)
		return x->point < y->point ? -1 : 1;
	return x->n < y->n ? -1 : x->n > y->n;
}

int persist_config_finish(persist *p, cfg_errors *errs)
{
	int before = errs->n + errs->dropped;
	prule **tail[HOOK__COUNT];
	for (int i = 0; i < HOOK__COUNT; i++) {
		p->at[i] = NULL;
		tail[i] = &p->at[i];
	}
	uint32_t wants = 0;
	p->sync_publish = false;
	p->wants_filters = 0;
	for (pbackend *be = p->backends; be; be = be->next) {
		const backend_type *t = be->type;
		for (ppool *pl = be->pools; pl; pl = pl->next) {
			char err[300] = "";
			if (t->pool_check && t->pool_check(pl->cfg, err, sizeof(err))) {
				char key[128];
				snprintf(key, sizeof(key), "backend.%s.%s", t->name, pl->name);
				cfg_errorf(errs, pl->file, pl->line, key, "%s", err);
			}
		}
		/* qsort's pointer must not be NULL even for zero elements (C11 7.22.5). */
		if (be->nrules)
			qsort(be->rule_vec, be->nrules, sizeof(prule *), cmp_rule);
		for (size_t i = 0; i < be->nrules; i++) {
			prule *r = be->rule_vec[i];
			r->pool = NULL;
			if (r->pool_name) {
				for (ppool *pl = be->pools; pl; pl = pl->next)
					if (strcmp(pl->name, r->pool_name) == 0)
						r->pool = pl;
				if (!r->pool) {
					cfg_errorf(errs, r->file, r->line, r->key,
					           "pool \"%s\" is not configured (add backend.%s.%s.* keys)",
					           r->pool_name, t->name, r->pool_name);
					continue;
				}
			} else if (be->pools && !be->pools->next) {
				r->pool = be->pools; /* the only pool */
			} else {
				cfg_errorf(errs, r->file, r->line, r->key,
				           be->pools ? "the rule has no \"pool\" and the backend has several"
				                     : "the rule has no \"pool\" and backend %s has no pool "
				                       "configured",
				           t->name);
				continue;
			}
			r->pool->used = true;
			if (r->max_returned_count < 0)
				r->max_returned_count = be->max_returned_count;
			if (r->time_range_ms == 0)
				r->time_range_ms = be->time_range_ms ? be->time_range_ms : UINT64_MAX;
			if (r->expired_time_s <= 0)
				r->expired_time_s = be->msg_expired_after_s > 0 ? be->msg_expired_after_s : 3600;
			r->next_at_point = NULL;
			*tail[r->point] = r;
			tail[r->point] = &r->next_at_point;
			wants |= 1u << r->point;
			if (r->point == HOOK_MESSAGE_PUBLISH && be->delivery_mode == DELIVERY_SYNC)
				p->sync_publish = true;
			if (r->point == HOOK_MESSAGE_ACKED || r->point == HOOK_MESSAGE_DELIVERED)
				p->wants_filters |= 1u << r->point;
		}
	}
	atomic_store(&p->wants, wants);
	return errs->n + errs->dropped > before ? -1 : 0;
}

void persist_config_free(persist *p)
{
	pbackend *be = p->backends;
	while (be) {
		pbackend *next = be->next;
		for (size_t i = 0; i < be->nrules; i++)
			rule_free(be, be->rule_vec[i]);
		free(be->rule_vec);
		ppool *pl = be->pools;
		while (pl) {
			ppool *pn = pl->next;
			if (be->type->pool_cfg_free)
				be->type->pool_cfg_free(pl->cfg);
			for (size_t i = 0; i < be->type->n_pool_keys; i++) {
				const cfg_key *k = &be->type->pool_keys[i];
				if (k->type == CFG_STRING || k->type == CFG_PATH) {
					char **s = (char **)((char *)pl->cfg + k->offset);
					free(*s);
					*s = NULL;
				}
			}
			free(pl->cfg);
			free(pl->spill_dir);
			free(pl->file);
			free(pl->slots);
			free(pl);
			pl = pn;
		}
		for (size_t i = 0; i < be->nrows; i++)
			free((char *)be->rows[i].name);
		free(be->rows);
		free(be->targets);
		free(be->name_buf);
		free(be);
		be = next;
	}
	p->backends = NULL;
}
