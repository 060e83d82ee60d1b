/*
 * state.c - the broker's own state in SQLite (state.store = sqlite).
 *
 * Five tables beside the spec's mqtt_* ones, all WITHOUT ROWID and keyed the
 * way they are read back:
 *   keepmq_session (clientid)          version, expiry, offline_at, username
 *   keepmq_sub     (clientid, filter)  options, sub_id
 *   keepmq_queue   (clientid, seq)     msgid, qos, flags, sub_id, pid, state
 *   keepmq_msg     (id)                the message in its stored form (msg_encode)
 *   keepmq_retain  (topic)             the message in its stored form
 * A message queued for many persistent sessions is stored once; the last
 * queue row to go takes it along (the index on keepmq_queue(msgid) makes
 * that check cheap).
 *
 * The connection is its own (the backend's pool connections may use the same
 * file): WAL, so readers never block it, and `synchronous = NORMAL`, under
 * which a committed transaction survives the process being killed (only a
 * power cut can lose the last commits). Two writers to one file take turns,
 * waiting for each other in short steps (sqlite_busy_wait).
 */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/sqlite/sqlite_be.h"
#include "util/log.h"

enum {
	S_BEGIN,
	S_COMMIT,
	S_ROLLBACK,
	S_SESSION_PUT,
	S_SESSION_GC,
	S_SESSION_DELQ,
	S_SESSION_DELS,
	S_SESSION_DEL,
	S_SUB_PUT,
	S_SUB_DEL,
	S_MSG_PUT,
	S_Q_PUT,
	S_Q_PID,
	S_Q_DEL,
	S_Q_DEL_RET,
	S_MSG_GC,
	S_RET_PUT,
	S_RET_DEL,
	S__N
};

static const char *const sql_text[S__N] = {
	[S_BEGIN] = "BEGIN IMMEDIATE",
	[S_COMMIT] = "COMMIT",
	[S_ROLLBACK] = "ROLLBACK",
	[S_SESSION_PUT] = "INSERT OR REPLACE INTO keepmq_session (clientid, version, expiry, "
	                  "offline_at, username) VALUES (?1, ?2, ?3, ?4, ?5)",
	[S_SESSION_GC] = "DELETE FROM keepmq_msg WHERE id IN (SELECT msgid FROM keepmq_queue WHERE "
	                 "clientid = ?1) AND NOT EXISTS (SELECT 1 FROM keepmq_queue q WHERE q.msgid = "
	                 "keepmq_msg.id AND q.clientid <> ?1)",
	[S_SESSION_DELQ] = "DELETE FROM keepmq_queue WHERE clientid = ?1",
	[S_SESSION_DELS] = "DELETE FROM keepmq_sub WHERE clientid = ?1",
	[S_SESSION_DEL] = "DELETE FROM keepmq_session WHERE clientid = ?1",
	[S_SUB_PUT] = "INSERT OR REPLACE INTO keepmq_sub (clientid, filter, options, sub_id) "
	              "VALUES (?1, ?2, ?3, ?4)",
	[S_SUB_DEL] = "DELETE FROM keepmq_sub WHERE clientid = ?1 AND filter = ?2",
	[S_MSG_PUT] = "INSERT OR IGNORE INTO keepmq_msg (id, data) VALUES (?1, ?2)",
	[S_Q_PUT] = "INSERT OR REPLACE INTO keepmq_queue (clientid, seq, msgid, qos, flags, sub_id, "
	            "pid, state) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0)",
	[S_Q_PID] = "UPDATE keepmq_queue SET pid = ?3, state = ?4 WHERE clientid = ?1 AND seq = ?2",
	[S_Q_DEL] = "DELETE FROM keepmq_queue WHERE clientid = ?1 AND seq = ?2",
	[S_Q_DEL_RET] = "DELETE FROM keepmq_queue WHERE clientid = ?1 AND seq = ?2 RETURNING msgid",
	[S_MSG_GC] = "DELETE FROM keepmq_msg WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM "
	             "keepmq_queue WHERE msgid = ?1)",
	[S_RET_PUT] = "INSERT OR REPLACE INTO keepmq_retain (topic, data) VALUES (?1, ?2)",
	[S_RET_DEL] = "DELETE FROM keepmq_retain WHERE topic = ?1",
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS keepmq_session (clientid TEXT PRIMARY KEY, version INTEGER "
	"NOT NULL, expiry INTEGER NOT NULL, offline_at INTEGER NOT NULL, username TEXT) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS keepmq_sub (clientid TEXT NOT NULL, filter TEXT NOT NULL, "
	"options INTEGER NOT NULL, sub_id INTEGER NOT NULL, PRIMARY KEY (clientid, filter)) "
	"WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS keepmq_queue (clientid TEXT NOT NULL, seq INTEGER NOT NULL, "
	"msgid BLOB NOT NULL, qos INTEGER NOT NULL, flags INTEGER NOT NULL, sub_id INTEGER NOT NULL, "
	"pid INTEGER NOT NULL, state INTEGER NOT NULL, PRIMARY KEY (clientid, seq)) WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS keepmq_queue_msgid ON keepmq_queue (msgid);"
	"CREATE TABLE IF NOT EXISTS keepmq_msg (id BLOB PRIMARY KEY, data BLOB NOT NULL) "
	"WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS keepmq_retain (topic TEXT PRIMARY KEY, data BLOB NOT NULL) "
	"WITHOUT ROWID;";

typedef struct sdb {
	sqlite3 *db;
	sqlite3_stmt *st[S__N];
	uint8_t *buf; /* encoding scratch */
	size_t cap;
} sdb;

static const uint64_t busy_timeout_ms = 10000;

static void st_close(void **dbp)
{
	sdb *d = *dbp;
	if (!d)
		return;
	*dbp = NULL;
	for (int i = 0; i < S__N; i++)
		sqlite3_finalize(d->st[i]);
	sqlite3_close(d->db);
	free(d->buf);
	free(d);
}

static int st_open(const char *file, void **out, char *err, size_t errlen)
{
	sdb *d = calloc(1, sizeof(*d));
	if (!d) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	void *dv = d;
	sqlite_make_parent(file);
	int rc = sqlite3_open_v2(file, &d->db,
	                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "state store %s: %s", file,
		         d->db ? sqlite3_errmsg(d->db) : sqlite3_errstr(rc));
		goto fail;
	}
	sqlite3_busy_handler(d->db, sqlite_busy_wait, (void *)&busy_timeout_ms);
	sqlite3_extended_result_codes(d->db, 1);
	char *emsg = NULL;
	if (sqlite3_exec(d->db, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;", NULL,
	                 NULL, &emsg) != SQLITE_OK ||
	    sqlite3_exec(d->db, schema, NULL, NULL, &emsg) != SQLITE_OK) {
		snprintf(err, errlen, "state store %s: %s", file, emsg ? emsg : sqlite3_errmsg(d->db));
		sqlite3_free(emsg);
		goto fail;
	}
	for (int i = 0; i < S__N; i++) {
		if (sqlite3_prepare_v3(d->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &d->st[i],
		                       NULL) != SQLITE_OK) {
			snprintf(err, errlen, "state store %s: %s", file, sqlite3_errmsg(d->db));
			goto fail;
		}
	}
	*out = d;
	return 0;
fail:
	st_close(&dv);
	return -1;
}

/* ---------------------------------------------------------------- writing */

static int run(sdb *d, int i)
{
	sqlite3_stmt *s = d->st[i];
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		;
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return rc == SQLITE_DONE ? 0 : rc;
}

static void bind_text(sqlite3_stmt *s, int i, const char *p, uint32_t n)
{
	sqlite3_bind_text(s, i, n ? p : "", (int)n, SQLITE_STATIC);
}

static int encode(sdb *d, const kmq_msg *m, size_t *n)
{
	*n = msg_encoded_size(m);
	if (*n > d->cap) {
		uint8_t *nb = realloc(d->buf, *n);
		if (!nb)
			return -1;
		d->buf = nb;
		d->cap = *n;
	}
	msg_encode(m, d->buf);
	return 0;
}

static int put_msg(sdb *d, const kmq_msg *m)
{
	size_t n;
	if (encode(d, m, &n))
		return SQLITE_NOMEM;
	sqlite3_stmt *s = d->st[S_MSG_PUT];
	sqlite3_bind_blob(s, 1, m->id, 16, SQLITE_STATIC);
	sqlite3_bind_blob(s, 2, d->buf, (int)n, SQLITE_STATIC);
	return run(d, S_MSG_PUT);
}

/* Deletes a queue row and, if no other row refers to it, its message. With
 * the message id known (msgid != NULL) this is two plain statements;
 * otherwise (at load) the id comes back from DELETE ... RETURNING, which
 * costs SQLite a temporary table per call. */
static int del_row(sdb *d, const char *cid, uint32_t cid_len, uint64_t seq, const void *msgid)
{
	if (msgid) {
		sqlite3_stmt *q = d->st[S_Q_DEL];
		bind_text(q, 1, cid, cid_len);
		sqlite3_bind_int64(q, 2, (sqlite3_int64)seq);
		int rc = run(d, S_Q_DEL);
		if (rc)
			return rc;
		if (sqlite3_changes(d->db) == 0)
			return 0;
		sqlite3_bind_blob(d->st[S_MSG_GC], 1, msgid, 16, SQLITE_STATIC);
		return run(d, S_MSG_GC);
	}
	sqlite3_stmt *s = d->st[S_Q_DEL_RET];
	bind_text(s, 1, cid, cid_len);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)seq);
	uint8_t id[16];
	bool have = false;
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (sqlite3_column_bytes(s, 0) == 16) {
			memcpy(id, sqlite3_column_blob(s, 0), 16);
			have = true;
		}
	}
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc != SQLITE_DONE)
		return rc;
	if (!have)
		return 0;
	sqlite3_bind_blob(d->st[S_MSG_GC], 1, id, 16, SQLITE_TRANSIENT);
	return run(d, S_MSG_GC);
}

/* A session and everything it holds (its messages unless shared). */
static int del_session(sdb *d, const char *cid, uint32_t cid_len)
{
	int rc = 0;
	for (int i = S_SESSION_GC; i <= S_SESSION_DEL && !rc; i++) {
		bind_text(d->st[i], 1, cid, cid_len);
		rc = run(d, i);
	}
	return rc;
}

static int apply_one(sdb *d, const state_op *op, const kmq_msg **last_msg)
{
	sqlite3_stmt *s;
	int rc = 0;
	switch (op->kind) {
	case SOP_SESSION_PUT:
		s = d->st[S_SESSION_PUT];
		bind_text(s, 1, op->cid, op->cid_len);
		sqlite3_bind_int(s, 2, op->version);
		sqlite3_bind_int64(s, 3, op->expiry_s);
		sqlite3_bind_int64(s, 4, (sqlite3_int64)op->offline_ms);
		if (op->key_len || op->flags)
			bind_text(s, 5, op->key, op->key_len);
		return run(d, S_SESSION_PUT);
	case SOP_SESSION_DEL:
		*last_msg = NULL;
		return del_session(d, op->cid, op->cid_len);
	case SOP_SUB_PUT:
		s = d->st[S_SUB_PUT];
		bind_text(s, 1, op->cid, op->cid_len);
		bind_text(s, 2, op->key, op->key_len);
		sqlite3_bind_int(s, 3, op->flags);
		sqlite3_bind_int64(s, 4, op->sub_id);
		return run(d, S_SUB_PUT);
	case SOP_SUB_DEL:
		s = d->st[S_SUB_DEL];
		bind_text(s, 1, op->cid, op->cid_len);
		bind_text(s, 2, op->key, op->key_len);
		return run(d, S_SUB_DEL);
	case SOP_MSG_ADD:
		/* a message fanned out to many sessions arrives as consecutive
		 * operations: store its body once */
		if (*last_msg != op->msg) {
			if ((rc = put_msg(d, op->msg)))
				return rc;
			*last_msg = op->msg;
		}
		s = d->st[S_Q_PUT];
		bind_text(s, 1, op->cid, op->cid_len);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)op->seq);
		sqlite3_bind_blob(s, 3, op->msg->id, 16, SQLITE_STATIC);
		sqlite3_bind_int(s, 4, op->qos);
		sqlite3_bind_int(s, 5, op->flags);
		sqlite3_bind_int64(s, 6, op->sub_id);
		return run(d, S_Q_PUT);
	case SOP_MSG_PID:
		s = d->st[S_Q_PID];
		bind_text(s, 1, op->cid, op->cid_len);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)op->seq);
		sqlite3_bind_int(s, 3, op->pid);
		sqlite3_bind_int(s, 4, op->mstate);
		return run(d, S_Q_PID);
	case SOP_MSG_DEL:
		*last_msg = NULL; /* its body may be gone now */
		return del_row(d, op->cid, op->cid_len, op->seq, op->key_len == 16 ? op->key : NULL);
	case SOP_RETAIN_PUT: {
		size_t n;
		if (encode(d, op->msg, &n))
			return SQLITE_NOMEM;
		s = d->st[S_RET_PUT];
		bind_text(s, 1, (const char *)op->msg->topic.p, op->msg->topic.len);
		sqlite3_bind_blob(s, 2, d->buf, (int)n, SQLITE_STATIC);
		return run(d, S_RET_PUT);
	}
	case SOP_RETAIN_DEL:
		s = d->st[S_RET_DEL];
		bind_text(s, 1, op->key, op->key_len);
		return run(d, S_RET_DEL);
	}
	return 0;
}

static int st_apply(void *dbp, state_op *const *ops, size_t n, char *err, size_t errlen)
{
	sdb *d = dbp;
	int rc = run(d, S_BEGIN);
	if (rc) {
		snprintf(err, errlen, "BEGIN: %s", sqlite3_errmsg(d->db));
		return -1;
	}
	const kmq_msg *last = NULL;
	for (size_t i = 0; i < n; i++) {
		rc = apply_one(d, ops[i], &last);
		if (rc == 0)
			continue;
		int primary = rc & 0xff;
		if (primary == SQLITE_CONSTRAINT || primary == SQLITE_MISMATCH ||
		    primary == SQLITE_TOOBIG) {
			/* this change alone cannot be written; the others can */
			static log_ratelimit rl;
			log_ratelimited(&rl, 60000, LOG_ERROR, "state store: a change (kind %d) was refused: %s",
			                ops[i]->kind, sqlite3_errmsg(d->db));
			continue;
		}
		snprintf(err, errlen, "%s", sqlite3_errmsg(d->db));
		run(d, S_ROLLBACK);
		return -1;
	}
	if ((rc = run(d, S_COMMIT))) {
		snprintf(err, errlen, "COMMIT: %s", sqlite3_errmsg(d->db));
		run(d, S_ROLLBACK);
		return -1;
	}
	return 0;
}

/* ---------------------------------------------------------------- loading */

static const char *col_text(sqlite3_stmt *s, int i, uint32_t *n)
{
	const char *p = (const char *)sqlite3_column_text(s, i);
	*n = (uint32_t)sqlite3_column_bytes(s, i);
	return p ? p : "";
}

static kmq_msg *col_msg(sqlite3_stmt *s, int i)
{
	const void *p = sqlite3_column_blob(s, i);
	int n = sqlite3_column_bytes(s, i);
	return p && n > 0 ? msg_decode(p, (size_t)n) : NULL;
}

/* Rows the loader refused, deleted once the SELECT that found them is done
 * (deleting from a table while a statement walks it is not defined to visit
 * every row exactly once). */
typedef struct gone_row {
	struct gone_row *next;
	uint64_t seq; /* queue rows; sessions: unused */
	uint32_t cid_len;
	char cid[];
} gone_row;

static void remember(gone_row **list, const char *cid, uint32_t len, uint64_t seq)
{
	gone_row *g = malloc(sizeof(*g) + len);
	if (!g)
		return; /* the row stays; it is refused again at the next start */
	g->seq = seq;
	g->cid_len = len;
	memcpy(g->cid, cid, len);
	g->next = *list;
	*list = g;
}

static void forget_sessions(sdb *d, gone_row **list)
{
	while (*list) {
		gone_row *g = *list;
		*list = g->next;
		del_session(d, g->cid, g->cid_len);
		free(g);
	}
}

static void forget_rows(sdb *d, gone_row **list)
{
	while (*list) {
		gone_row *g = *list;
		*list = g->next;
		del_row(d, g->cid, g->cid_len, g->seq, NULL);
		free(g);
	}
}

static int st_load(void *dbp, const state_loader *l, char *err, size_t errlen)
{
	sdb *d = dbp;
	sqlite3_stmt *s = NULL;
	uint64_t bad = 0;
	gone_row *gone = NULL;
	if (sqlite3_exec(d->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;

	/* sessions */
	if (sqlite3_prepare_v2(d->db, "SELECT clientid, version, expiry, offline_at, username FROM "
	                       "keepmq_session", -1, &s, NULL) != SQLITE_OK)
		goto fail;
	while (sqlite3_step(s) == SQLITE_ROW) {
		state_session ss = {0};
		ss.cid = col_text(s, 0, &ss.cid_len);
		ss.version = (uint8_t)sqlite3_column_int(s, 1);
		sqlite3_int64 e = sqlite3_column_int64(s, 2);
		ss.expiry_s = e < 0 ? 0 : e > UINT32_MAX ? UINT32_MAX : (uint32_t)e;
		ss.offline_ms = (uint64_t)sqlite3_column_int64(s, 3);
		if (sqlite3_column_type(s, 4) != SQLITE_NULL)
			ss.username = col_text(s, 4, &ss.ulen);
		if (l->session(l->arg, &ss)) /* expired or unusable: it and all it held go */
			remember(&gone, ss.cid, ss.cid_len, 0);
	}
	sqlite3_finalize(s);
	s = NULL;
	forget_sessions(d, &gone);

	/* subscriptions (of sessions the loader kept) */
	if (sqlite3_prepare_v2(d->db, "SELECT clientid, filter, options, sub_id FROM keepmq_sub", -1,
	                       &s, NULL) != SQLITE_OK)
		goto fail;
	while (sqlite3_step(s) == SQLITE_ROW) {
		uint32_t cl, fl;
		const char *cid = col_text(s, 0, &cl), *f = col_text(s, 1, &fl);
		if (l->sub(l->arg, cid, cl, f, fl, (uint8_t)sqlite3_column_int(s, 2),
		           (uint32_t)sqlite3_column_int64(s, 3)))
			bad++;
	}
	sqlite3_finalize(s);

	/* queued messages, per session in order */
	if (sqlite3_prepare_v2(d->db, "SELECT q.clientid, q.seq, q.qos, q.flags, q.sub_id, q.pid, "
	                       "q.state, m.data FROM keepmq_queue q JOIN keepmq_msg m ON m.id = "
	                       "q.msgid ORDER BY q.clientid, q.seq", -1, &s, NULL) != SQLITE_OK)
		goto fail;
	while (sqlite3_step(s) == SQLITE_ROW) {
		state_queued q = {0};
		q.cid = col_text(s, 0, &q.cid_len);
		q.seq = (uint64_t)sqlite3_column_int64(s, 1);
		q.qos = (uint8_t)sqlite3_column_int(s, 2);
		q.flags = (uint8_t)sqlite3_column_int(s, 3);
		q.sub_id = (uint32_t)sqlite3_column_int64(s, 4);
		q.pid = (uint16_t)sqlite3_column_int(s, 5);
		q.mstate = (uint8_t)sqlite3_column_int(s, 6);
		q.msg = col_msg(s, 7);
		if (!q.msg || l->queued(l->arg, &q)) {
			/* unreadable, or not kept (over the queue limit): it goes */
			bad++;
			remember(&gone, q.cid, q.cid_len, q.seq);
		}
	}
	sqlite3_finalize(s);
	s = NULL;
	forget_rows(d, &gone);

	/* retained messages */
	if (sqlite3_prepare_v2(d->db, "SELECT data FROM keepmq_retain", -1, &s, NULL) != SQLITE_OK)
		goto fail;
	while (sqlite3_step(s) == SQLITE_ROW) {
		kmq_msg *m = col_msg(s, 0);
		if (!m) {
			bad++;
			continue;
		}
		if (l->retained(l->arg, m))
			bad++;
	}
	sqlite3_finalize(s);
	s = NULL;
	/* queue rows and subscriptions of sessions that are gone */
	if (sqlite3_exec(d->db,
	                 "DELETE FROM keepmq_queue WHERE clientid NOT IN (SELECT clientid FROM "
	                 "keepmq_session);"
	                 "DELETE FROM keepmq_sub WHERE clientid NOT IN (SELECT clientid FROM "
	                 "keepmq_session);"
	                 "DELETE FROM keepmq_msg WHERE NOT EXISTS (SELECT 1 FROM keepmq_queue q "
	                 "WHERE q.msgid = keepmq_msg.id);"
	                 "COMMIT",
	                 NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	if (bad)
		log_warning("state store: %llu stored rows could not be used and were skipped",
		            (unsigned long long)bad);
	return 0;
fail:
	snprintf(err, errlen, "state store: loading: %s", sqlite3_errmsg(d->db));
	sqlite3_finalize(s);
	while (gone) {
		gone_row *g = gone;
		gone = g->next;
		free(g);
	}
	sqlite3_exec(d->db, "ROLLBACK", NULL, NULL, NULL);
	return -1;
}

const state_store_type sqlite_state_store = {
	.api = STATE_STORE_API,
	.name = "sqlite",
	.open = st_open,
	.load = st_load,
	.apply = st_apply,
	.close = st_close,
};
