/*
 * sqlite.c - the embedded SQLite backend (`backend.sqlite.*`): connection,
 * prepared-statement cache, error classes, and the backend table.
 *
 * SQLite has no asynchronous API, so each pool connection is a thread of
 * the framework's pool (persist/pool.c) with its own sqlite3 handle opened
 * with SQLITE_OPEN_NOMUTEX (one thread per handle). The file is put in WAL
 * mode: readers never block the writer, and a commit is one append to the
 * log. With `synchronous = normal` (the default) a commit survives a crash
 * of the broker process, kill -9 included; `full` also survives power loss
 * at the price of an fsync per commit.
 *
 * Statements are prepared once per connection and kept (keyed by the
 * address of their text in the dialect or of the compiled raw template).
 * Errors are sorted into those worth retrying (busy, locked, I/O, full,
 * read-only, cannot open) and those that are the job's own fault.
 */
#include <errno.h>
#include <sqlite3.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backends/sqlite/sqlite_be.h"
#include "util/log.h"

typedef struct sqlite_pool_cfg {
	char *database;
	uint64_t busy_timeout_ms;
	int synchronous;
} sqlite_pool_cfg;

typedef struct stmt_slot {
	const void *key;
	sqlite3_stmt *st;
} stmt_slot;

struct pconn {
	sql_conn base; /* first: the SQL layer's view */
	sqlite3 *db;
	stmt_slot *stmts;
	size_t nstmts, cap;
	sqlite3_stmt *begin, *commit, *rollback;
	uint64_t busy_timeout_ms;
	char err[256];
};

static const char *const sync_modes[] = {"normal", "full", NULL};

static const cfg_key pool_keys[] = {
	{"database", CFG_PATH, "data/keepmq.db", 0, 0, NULL, offsetof(sqlite_pool_cfg, database),
	 NULL, 0,
	 "The database file; created, with its tables, if it does not exist (its directory too). "
	 "A relative path is relative to the directory keepmq was started in."},
	{"busy_timeout", CFG_DURATION, "5s", 0, 600000, NULL,
	 offsetof(sqlite_pool_cfg, busy_timeout_ms), NULL, 0,
	 "How long a statement waits for another connection's lock before failing (it is then "
	 "retried)."},
	{"synchronous", CFG_ENUM, "normal", 0, 0, sync_modes, offsetof(sqlite_pool_cfg, synchronous),
	 NULL, 0,
	 "`normal`: a commit survives a crash or kill of the broker (WAL mode). `full`: it also "
	 "survives a power loss, at the cost of an fsync per commit."},
};

static int classify(int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return SQLR_OK;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
	case SQLITE_IOERR:
	case SQLITE_FULL:
	case SQLITE_READONLY:
	case SQLITE_CANTOPEN:
	case SQLITE_NOMEM:
	case SQLITE_PROTOCOL:
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return SQLR_RETRY;
	default:
		return SQLR_FAIL;
	}
}

static void set_err(pconn *c, const char *what)
{
	snprintf(c->err, sizeof(c->err), "%s: %s", what, sqlite3_errmsg(c->db));
}

static const char *drv_errmsg(pconn *c) { return c->err; }

static int run_simple(pconn *c, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		set_err(c, sqlite3_sql(st));
		return classify(rc) == SQLR_OK ? SQLR_FAIL : classify(rc);
	}
	return SQLR_OK;
}

static int drv_begin(pconn *c) { return run_simple(c, c->begin); }
static int drv_commit(pconn *c) { return run_simple(c, c->commit); }
static int drv_rollback(pconn *c)
{
	if (sqlite3_get_autocommit(c->db))
		return SQLR_OK; /* SQLite already rolled back (e.g. after SQLITE_FULL) */
	return run_simple(c, c->rollback);
}

static sqlite3_stmt *cached(pconn *c, const void *key, const char *text, int *rc_out)
{
	for (size_t i = 0; i < c->nstmts; i++)
		if (c->stmts[i].key == key)
			return c->stmts[i].st;
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v3(c->db, text, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
	if (rc != SQLITE_OK) {
		set_err(c, "prepare");
		*rc_out = classify(rc) == SQLR_OK ? SQLR_FAIL : classify(rc);
		/* a statement that does not compile (no such table, syntax) is the
		 * rule's fault: fail it; a locked or unreadable file is retried */
		return NULL;
	}
	if (c->nstmts == c->cap) {
		size_t nc = c->cap ? c->cap * 2 : 32;
		stmt_slot *nv = realloc(c->stmts, nc * sizeof(*nv));
		if (!nv) {
			sqlite3_finalize(st);
			*rc_out = SQLR_RETRY;
			return NULL;
		}
		c->stmts = nv;
		c->cap = nc;
	}
	c->stmts[c->nstmts++] = (stmt_slot){key, st};
	return st;
}

static int drv_exec(pconn *c, const void *key, const char *text, const sql_val *v, int nv,
                    sql_row_fn cb, void *ud)
{
	int rc = SQLR_FAIL;
	sqlite3_stmt *st = cached(c, key, text, &rc);
	if (!st)
		return rc;
	for (int i = 0; i < nv; i++) {
		int b;
		switch (v[i].type) {
		case SQLV_INT: b = sqlite3_bind_int64(st, i + 1, v[i].i); break;
		case SQLV_TEXT:
			b = sqlite3_bind_text64(st, i + 1, v[i].p ? v[i].p : "", v[i].len, SQLITE_STATIC,
			                        SQLITE_UTF8);
			break;
		case SQLV_BLOB:
			b = sqlite3_bind_blob64(st, i + 1, v[i].p ? v[i].p : "", v[i].len, SQLITE_STATIC);
			break;
		default: b = sqlite3_bind_null(st, i + 1); break;
		}
		if (b != SQLITE_OK) {
			set_err(c, "bind");
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			return SQLR_FAIL;
		}
	}
	int out = SQLR_OK;
	for (;;) {
		int s = sqlite3_step(st);
		if (s == SQLITE_DONE)
			break;
		if (s != SQLITE_ROW) {
			set_err(c, "step");
			out = classify(s) == SQLR_OK ? SQLR_FAIL : classify(s);
			break;
		}
		if (!cb)
			continue;
		int nc = sqlite3_column_count(st);
		sql_val cols[16];
		if (nc > 16)
			nc = 16;
		for (int k = 0; k < nc; k++) {
			switch (sqlite3_column_type(st, k)) {
			case SQLITE_INTEGER:
			case SQLITE_FLOAT: cols[k] = SQLV_I(sqlite3_column_int64(st, k)); break;
			case SQLITE_TEXT: {
				const unsigned char *p = sqlite3_column_text(st, k);
				cols[k] = SQLV_T(p, (size_t)sqlite3_column_bytes(st, k));
				break;
			}
			case SQLITE_BLOB: {
				const void *p = sqlite3_column_blob(st, k);
				cols[k] = SQLV_B(p, (size_t)sqlite3_column_bytes(st, k));
				break;
			}
			default: cols[k] = SQLV_NUL; break;
			}
		}
		if (cb(ud, cols, nc))
			break;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return out;
}

static const sql_driver sqlite_driver = {
	.dialect = &sqlite_dialect,
	.begin = drv_begin,
	.commit = drv_commit,
	.rollback = drv_rollback,
	.exec = drv_exec,
	.errmsg = drv_errmsg,
};

/* ---------------------------------------------------------------- connections */

static void be_close(pconn **cp)
{
	pconn *c = *cp;
	if (!c)
		return;
	*cp = NULL;
	for (size_t i = 0; i < c->nstmts; i++)
		sqlite3_finalize(c->stmts[i].st);
	free(c->stmts);
	sqlite3_finalize(c->begin);
	sqlite3_finalize(c->commit);
	sqlite3_finalize(c->rollback);
	sqlite3_close_v2(c->db);
	free(c);
}

/* mkdir -p of the file's directory */
int sqlite_busy_wait(void *arg, int n)
{
	const uint64_t *timeout_ms = arg;
	if ((uint64_t)n * SQLITE_BUSY_STEP_US >= *timeout_ms * 1000u)
		return 0;
	struct timespec ts = {0, SQLITE_BUSY_STEP_US * 1000L};
	nanosleep(&ts, NULL);
	return 1;
}

void sqlite_make_parent(const char *path)
{
	char *d = strdup(path);
	if (!d)
		return;
	char *slash = strrchr(d, '/');
	if (slash && slash != d) {
		*slash = 0;
		for (char *p = d + 1; *p; p++) {
			if (*p == '/') {
				*p = 0;
				mkdir(d, 0755);
				*p = '/';
			}
		}
		mkdir(d, 0755);
	}
	free(d);
}

static int be_open(const void *cfgp, const persist_host *host, pconn **out, char *err,
                   size_t errlen)
{
	const sqlite_pool_cfg *cfg = cfgp;
	pconn *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	c->base.drv = &sqlite_driver;
	c->base.host = host;
	sqlite_make_parent(cfg->database);
	int rc = sqlite3_open_v2(cfg->database, &c->db,
	                         SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", cfg->database,
		         c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
		goto fail;
	}
	c->busy_timeout_ms = cfg->busy_timeout_ms;
	sqlite3_busy_handler(c->db, sqlite_busy_wait, &c->busy_timeout_ms);
	sqlite3_extended_result_codes(c->db, 1);
	char *emsg = NULL;
	char pragmas[160];
	snprintf(pragmas, sizeof(pragmas),
	         "PRAGMA journal_mode = WAL; PRAGMA synchronous = %s; PRAGMA foreign_keys = OFF;",
	         cfg->synchronous ? "FULL" : "NORMAL");
	if (sqlite3_exec(c->db, pragmas, NULL, NULL, &emsg) != SQLITE_OK ||
	    sqlite3_exec(c->db, "BEGIN IMMEDIATE", NULL, NULL, &emsg) != SQLITE_OK) {
		snprintf(err, errlen, "%s: %s", cfg->database, emsg ? emsg : sqlite3_errmsg(c->db));
		sqlite3_free(emsg);
		goto fail;
	}
	if (sqlite3_exec(c->db, sqlite_schema_sql, NULL, NULL, &emsg) != SQLITE_OK ||
	    sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		snprintf(err, errlen, "%s: creating the tables: %s", cfg->database,
		         emsg ? emsg : sqlite3_errmsg(c->db));
		sqlite3_free(emsg);
		sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
		goto fail;
	}
	if (sqlite3_prepare_v3(c->db, "BEGIN IMMEDIATE", -1, SQLITE_PREPARE_PERSISTENT, &c->begin,
	                       NULL) ||
	    sqlite3_prepare_v3(c->db, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT, &c->commit, NULL) ||
	    sqlite3_prepare_v3(c->db, "ROLLBACK", -1, SQLITE_PREPARE_PERSISTENT, &c->rollback,
	                       NULL)) {
		snprintf(err, errlen, "%s: %s", cfg->database, sqlite3_errmsg(c->db));
		goto fail;
	}
	*out = c;
	return 0;
fail:
	be_close(&c);
	return -1;
}

static int be_ping(pconn *c)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(c->db, "SELECT count(*) FROM sqlite_master", -1, &st, NULL) !=
	    SQLITE_OK)
		return -1;
	int rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : -1;
}

static int be_pool_check(const void *cfgp, char *err, size_t errlen)
{
	const sqlite_pool_cfg *cfg = cfgp;
	if (!cfg->database || !cfg->database[0]) {
		snprintf(err, errlen, "the pool needs a database file (.database = path)");
		return -1;
	}
	return 0;
}

static int be_raw_compile(const char *const *texts, size_t n, void **out, char *err,
                          size_t errlen)
{
	return sql_raw_compile(texts, n, '?', out, err, errlen);
}

static int be_run_batch(pconn *c, pjob **jobs, size_t n) { return sql_run_batch(c, jobs, n); }

const backend_type sqlite_backend = {
	.api = PERSIST_BACKEND_API,
	.name = "sqlite",
	.title = "SQLite",
	.pool_keys = pool_keys,
	.n_pool_keys = sizeof(pool_keys) / sizeof(pool_keys[0]),
	.pool_cfg_size = sizeof(sqlite_pool_cfg),
	.funcs = sql_funcs,
	.nfuncs = SQLF__COUNT,
	.raw_key = "sql",
	.default_pool_size = 1,
	.raw_compile = be_raw_compile,
	.raw_free = sql_raw_free,
	.pool_check = be_pool_check,
	.open = be_open,
	.close = be_close,
	.ping = be_ping,
	.run_batch = be_run_batch,
	.last_error = drv_errmsg,
};
