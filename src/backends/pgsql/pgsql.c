/*
 * pgsql.c - the PostgreSQL backend (`backend.pgsql.*`) through libpq:
 * connections, prepared statements, parameter formats, error classes.
 *
 * As with MySQL, each pool connection is a thread of the framework's pool
 * with one blocking connection, a batch is one transaction and consecutive
 * message stores in it are one multi-row INSERT (batch.c).
 *
 * Parameters. A statement is prepared once per connection and described
 * (PQdescribePrepared), so the driver knows the type PostgreSQL gave each
 * parameter: a value bound to a bytea parameter is sent in binary format -
 * its bytes as they are, NUL bytes included - and every other value in
 * text format, so a payload bound into a text, json or jsonb column of a
 * raw action is parsed as that type's text. A text value with a NUL byte
 * cannot be sent that way (PostgreSQL text cannot hold one): the job fails
 * with a message saying so. Results come in binary format and are read by
 * type: integers, booleans, text-like types and bytea; other types read as
 * NULL (no built-in function reads one).
 *
 * Errors, by SQLSTATE: connection exceptions (08...), an administrator's
 * shutdown or termination (57P..) or a broken connection are SQLR_LOST
 * (new connection, batch retried - what an idle_session_timeout or
 * pg_terminate_backend needs); serialization failures, deadlocks, lock and
 * statement timeouts, read-only transactions, insufficient resources and
 * missing privileges are SQLR_RETRY; anything else fails the job alone.
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/pgsql/pgsql_be.h"

#define BYTEAOID 17
#define BOOLOID 16
#define INT8OID 20
#define INT2OID 21
#define INT4OID 23
#define OIDOID 26

static const cfg_key pool_keys[] = {
	{"server", CFG_STRING, "127.0.0.1:5432", 0, 0, NULL, SQL_NET_O(server), NULL, 0,
	 "The PostgreSQL server, `host:port`."},
	{"username", CFG_STRING, "root", 0, 0, NULL, SQL_NET_O(user), NULL, 0,
	 "The role to log in as."},
	SQL_NET_COMMON_KEYS("pgsql"),
};

struct pconn {
	sql_conn base; /* first: the SQL layer's view */
	PGconn *db;
	sql_stmt_cache stmts;
	unsigned next_name;
	char err[512];
};

static int classify(const PGresult *res, PGconn *db)
{
	if (PQstatus(db) != CONNECTION_OK)
		return SQLR_LOST;
	const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	if (!st || strlen(st) != 5)
		return SQLR_LOST;
	if (!strncmp(st, "08", 2) || !strncmp(st, "57P", 3) || !strcmp(st, "26000") ||
	    !strcmp(st, "0A000"))
		/* 26000: a prepared statement the server no longer has; 0A000
		 * "cached plan must not change result type" after an ALTER TABLE:
		 * a new connection prepares them again */
		return SQLR_LOST;
	if (!strncmp(st, "40", 2) || !strncmp(st, "53", 2) || !strcmp(st, "55P03") ||
	    !strcmp(st, "57014") || !strcmp(st, "25006") || !strcmp(st, "42501"))
		return SQLR_RETRY;
	return SQLR_FAIL;
}

static int res_error(pconn *c, PGresult *res, const char *what)
{
	const char *m = res ? PQresultErrorMessage(res) : NULL;
	if (!m || !m[0])
		m = PQerrorMessage(c->db);
	snprintf(c->err, sizeof(c->err), "%s: %s", what, m);
	size_t n = strlen(c->err);
	while (n && (c->err[n - 1] == '\n' || c->err[n - 1] == ' '))
		c->err[--n] = 0;
	return classify(res, c->db);
}

static const char *drv_errmsg(pconn *c) { return c->err; }

static int simple(pconn *c, const char *sql)
{
	PGresult *res = PQexec(c->db, sql);
	int rc = SQLR_OK;
	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		rc = res_error(c, res, sql);
	PQclear(res);
	return rc;
}

static int drv_begin(pconn *c) { return simple(c, "BEGIN"); }
static int drv_commit(pconn *c) { return simple(c, "COMMIT"); }
static int drv_rollback(pconn *c)
{
	if (PQtransactionStatus(c->db) == PQTRANS_IDLE)
		return SQLR_OK;
	return simple(c, "ROLLBACK");
}

static void stmt_drop(void *name) { free(name); }

static sql_stmt_slot *prepared(pconn *c, const void *key, const char *text, int *rc)
{
	sql_stmt_slot *s = sql_stmt_find(&c->stmts, key);
	if (s)
		return s;
	char name[24];
	snprintf(name, sizeof(name), "k%u", c->next_name++);
	PGresult *res = PQprepare(c->db, name, text, 0, NULL);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		*rc = res_error(c, res, "prepare");
		PQclear(res);
		return NULL;
	}
	PQclear(res);
	res = PQdescribePrepared(c->db, name);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		*rc = res_error(c, res, "describe");
		PQclear(res);
		return NULL;
	}
	int np = PQnparams(res);
	uint32_t *types = calloc((size_t)np + 1, sizeof(*types));
	char *nm = strdup(name);
	s = types && nm ? sql_stmt_add(&c->stmts, key) : NULL;
	if (!s) {
		free(types);
		free(nm);
		PQclear(res);
		snprintf(c->err, sizeof(c->err), "out of memory");
		*rc = SQLR_RETRY;
		return NULL;
	}
	for (int i = 0; i < np; i++)
		types[i] = (uint32_t)PQparamtype(res, i);
	PQclear(res);
	s->stmt = nm;
	s->nparams = (uint32_t)np;
	s->types = types;
	return s;
}

static int64_t be_int(const char *p, int len)
{
	uint64_t v = 0;
	for (int i = 0; i < len; i++)
		v = v << 8 | (uint8_t)p[i];
	if (len == 2)
		return (int16_t)v;
	if (len == 4)
		return (int32_t)v;
	return (int64_t)v;
}

#define MAX_COLS 16

static int read_rows(PGresult *res, sql_row_fn cb, void *ud)
{
	int nf = PQnfields(res), nr = PQntuples(res);
	if (nf > MAX_COLS)
		nf = MAX_COLS;
	for (int r = 0; r < nr; r++) {
		sql_val cols[MAX_COLS];
		for (int k = 0; k < nf; k++) {
			if (PQgetisnull(res, r, k)) {
				cols[k] = SQLV_NUL;
				continue;
			}
			const char *p = PQgetvalue(res, r, k);
			int len = PQgetlength(res, r, k);
			switch (PQftype(res, k)) {
			case INT2OID:
			case INT4OID:
			case INT8OID:
			case OIDOID:
				cols[k] = (len == 2 || len == 4 || len == 8) ? SQLV_I(be_int(p, len)) : SQLV_NUL;
				break;
			case BOOLOID: cols[k] = SQLV_I(len == 1 && p[0] ? 1 : 0); break;
			case BYTEAOID: cols[k] = SQLV_B(p, (size_t)len); break;
			case 25:   /* text */
			case 1043: /* varchar */
			case 1042: /* char(n) */
			case 19:   /* name */
			case 705:  /* unknown */
				cols[k] = SQLV_T(p, (size_t)len);
				break;
			default: cols[k] = SQLV_NUL; break;
			}
		}
		if (cb(ud, cols, nf))
			break;
	}
	return SQLR_OK;
}

static int drv_exec(pconn *c, const void *key, const char *text, const sql_val *v, int nv,
                    sql_row_fn cb, void *ud)
{
	int rc = SQLR_FAIL;
	sql_stmt_slot *s = prepared(c, key, text, &rc);
	if (!s)
		return rc;
	if (s->nparams != (uint32_t)nv) {
		snprintf(c->err, sizeof(c->err), "the statement has %u parameters, %d values given",
		         s->nparams, nv);
		return SQLR_FAIL;
	}
	/* text-format values need a NUL-terminated copy: one arena for all */
	size_t need = 0;
	for (int i = 0; i < nv; i++) {
		if (v[i].type == SQLV_INT)
			need += 24;
		else if ((v[i].type == SQLV_TEXT || v[i].type == SQLV_BLOB) && s->types[i] != BYTEAOID)
			need += v[i].len + 1;
	}
	const char *sv[64];
	int sl[64], sf[64];
	const char **vals = nv <= 64 ? sv : malloc((size_t)nv * sizeof(*vals));
	int *lens = nv <= 64 ? sl : malloc((size_t)nv * sizeof(int));
	int *fmts = nv <= 64 ? sf : malloc((size_t)nv * sizeof(int));
	char *arena = malloc(need + 1);
	if (!vals || !lens || !fmts || !arena) {
		snprintf(c->err, sizeof(c->err), "out of memory");
		rc = SQLR_RETRY;
		goto done;
	}
	char *o = arena;
	for (int i = 0; i < nv; i++) {
		lens[i] = 0;
		fmts[i] = 0;
		switch (v[i].type) {
		case SQLV_INT:
			vals[i] = o;
			o += sprintf(o, "%lld", (long long)v[i].i) + 1;
			break;
		case SQLV_TEXT:
		case SQLV_BLOB:
			if (v[i].len > 0x7fffffff) {
				snprintf(c->err, sizeof(c->err), "value %d is too long", i + 1);
				rc = SQLR_FAIL;
				goto done;
			}
			if (s->types[i] == BYTEAOID) {
				vals[i] = v[i].p ? v[i].p : "";
				lens[i] = (int)v[i].len;
				fmts[i] = 1;
				break;
			}
			if (v[i].len && memchr(v[i].p, 0, v[i].len)) {
				snprintf(c->err, sizeof(c->err),
				         "value %d holds a NUL byte, which PostgreSQL cannot store in a "
				         "non-bytea column",
				         i + 1);
				rc = SQLR_FAIL;
				goto done;
			}
			vals[i] = o;
			if (v[i].len)
				memcpy(o, v[i].p, v[i].len);
			o[v[i].len] = 0;
			o += v[i].len + 1;
			break;
		default: vals[i] = NULL; break;
		}
	}
	PGresult *res = PQexecPrepared(c->db, s->stmt, nv, vals, lens, fmts, 1);
	ExecStatusType st = PQresultStatus(res);
	if (st == PGRES_COMMAND_OK)
		rc = SQLR_OK;
	else if (st == PGRES_TUPLES_OK)
		rc = cb ? read_rows(res, cb, ud) : SQLR_OK;
	else
		rc = res_error(c, res, "execute");
	PQclear(res);
done:
	if (vals != sv)
		free(vals);
	if (lens != sl)
		free(lens);
	if (fmts != sf)
		free(fmts);
	free(arena);
	return rc;
}

static const sql_driver pgsql_driver = {
	.dialect = &pgsql_dialect,
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
	sql_stmt_clear(&c->stmts, stmt_drop);
	if (c->db)
		PQfinish(c->db);
	free(c);
}

/* Notices ("relation already exists, skipping") are not worth a log line. */
static void quiet(void *arg, const char *msg)
{
	(void)arg;
	(void)msg;
}

static int be_open(const void *cfgp, const persist_host *host, pconn **out, char *err,
                   size_t errlen)
{
	const sql_net_cfg *cfg = cfgp;
	pconn *c = calloc(1, sizeof(*c));
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	c->base.drv = &pgsql_driver;
	c->base.host = host;
	c->base.payload_base64 = cfg->payload_encoding == 1;
	char h[256], port[8], ct[24], ut[24];
	int p;
	sql_net_addr(cfg, h, &p);
	snprintf(port, sizeof(port), "%d", p);
	snprintf(ct, sizeof(ct), "%llu", (unsigned long long)((cfg->connect_timeout_ms + 999) / 1000));
	snprintf(ut, sizeof(ut), "%llu", (unsigned long long)cfg->command_timeout_ms);
	const char *sslmode = !cfg->ssl ? "disable" : cfg->ssl_verify ? "verify-full" : "require";
	const char *keys[24], *vals[24];
	int n = 0;
#define KV(k, v) (keys[n] = (k), vals[n] = (v), n++)
	KV("host", h);
	KV("port", port);
	KV("user", cfg->user);
	KV("password", cfg->password);
	KV("dbname", cfg->database);
	KV("connect_timeout", ct);
	KV("tcp_user_timeout", ut);
	KV("keepalives", "1");
	KV("application_name", "keepmq");
	KV("client_encoding", "UTF8");
	KV("options", "-c timezone=UTC");
	KV("sslmode", sslmode);
	if (cfg->ssl && cfg->ssl_ca && cfg->ssl_ca[0])
		KV("sslrootcert", cfg->ssl_ca);
	if (cfg->ssl && cfg->ssl_cert && cfg->ssl_cert[0]) {
		KV("sslcert", cfg->ssl_cert);
		KV("sslkey", cfg->ssl_key);
	}
#undef KV
	keys[n] = vals[n] = NULL;
	c->db = PQconnectdbParams(keys, vals, 0);
	if (!c->db || PQstatus(c->db) != CONNECTION_OK) {
		const char *m = c->db ? PQerrorMessage(c->db) : "out of memory";
		size_t ml = strlen(m);
		while (ml && m[ml - 1] == '\n')
			ml--;
		snprintf(err, errlen, "%s:%d: %.*s", h, p, (int)ml, m);
		goto fail;
	}
	PQsetNoticeProcessor(c->db, quiet, NULL);
	if (cfg->create_tables) {
		/* concurrent CREATE TABLE IF NOT EXISTS can collide in the catalog:
		 * the pool's connections take turns with an advisory lock */
		if (simple(c, "BEGIN") || simple(c, "SELECT pg_advisory_xact_lock(7236110529)") ||
		    simple(c, pgsql_schema_sql) || simple(c, "COMMIT")) {
			snprintf(err, errlen, "%s:%d: creating the tables: %s", h, p, c->err);
			goto fail;
		}
	}
	c->err[0] = 0;
	*out = c;
	return 0;
fail:
	be_close(&c);
	return -1;
}

static int be_ping(pconn *c) { return simple(c, "SELECT 1") == SQLR_OK ? 0 : -1; }

static int be_raw_compile(const char *const *texts, size_t n, void **out, char *err,
                          size_t errlen)
{
	return sql_raw_compile(texts, n, SQL_LEX_PGSQL, out, err, errlen);
}

static int be_run_batch(pconn *c, pjob **jobs, size_t n) { return sql_run_batch(c, jobs, n); }

const backend_type pgsql_backend = {
	.api = PERSIST_BACKEND_API,
	.name = "pgsql",
	.title = "PostgreSQL",
	.pool_keys = pool_keys,
	.n_pool_keys = sizeof(pool_keys) / sizeof(pool_keys[0]),
	.pool_cfg_size = sizeof(sql_net_cfg),
	.funcs = sql_funcs,
	.nfuncs = SQLF__COUNT,
	.raw_key = "sql",
	.default_pool_size = 8,
	.raw_compile = be_raw_compile,
	.raw_free = sql_raw_free,
	.pool_check = sql_net_check,
	.open = be_open,
	.close = be_close,
	.ping = be_ping,
	.run_batch = be_run_batch,
	.last_error = drv_errmsg,
};
