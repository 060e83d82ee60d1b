/*
 * mysql.c - the MySQL / MariaDB backend (`backend.mysql.*`) through
 * MariaDB Connector/C: connections, prepared statements, error classes.
 *
 * Each pool connection is a thread of the framework's pool with one
 * blocking connection (the framework gives every pool its own threads, so a
 * slow database never stalls an I/O worker). Throughput comes from batching
 * rather than from overlapping requests on one connection: a batch is one
 * transaction, and consecutive message stores in it are one multi-row
 * INSERT (batch.c), so a batch of 64 messages costs a few round trips.
 * MySQL's protocol cannot pipeline prepared statements, so its
 * non-blocking API would only overlap the waits of several connections -
 * which the pool's threads already do.
 *
 * Every value is bound to a server-side prepared statement (kept per
 * connection, keyed like the SQLite backend's). The connection runs with
 * autocommit off, so a batch needs no BEGIN round trip, with time_zone
 * '+00:00' (datetimes are written as UTC text and TIMESTAMP columns would
 * otherwise shift them), and with utf8mb4.
 *
 * Errors: a broken connection (gone away, lost, killed, refused, timed out)
 * is SQLR_LOST - the batch is retried on a new connection, which is how an
 * idle connection killed by the server's wait_timeout is survived; a server
 * that refuses for now (read-only, lock wait, deadlock, disk full, access
 * revoked) is SQLR_RETRY; anything else (no such table, bad SQL, data too
 * long) is the job's own and fails it alone.
 */
#include <mysql.h>
#include <mysqld_error.h>
#include <errmsg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/mysql/mysql_be.h"

static const cfg_key pool_keys[] = {
	{"server", CFG_STRING, "127.0.0.1:3306", 0, 0, NULL, SQL_NET_O(server), NULL, 0,
	 "The MySQL or MariaDB server, `host:port`."},
	{"user", CFG_STRING, "root", 0, 0, NULL, SQL_NET_O(user), NULL, 0, "The user name."},
	SQL_NET_COMMON_KEYS("mysql"),
};

struct pconn {
	sql_conn base; /* first: the SQL layer's view */
	MYSQL *db;
	sql_stmt_cache stmts;
	char err[512];
};

static int classify(unsigned int e)
{
	if (e == 0)
		return SQLR_OK;
	if (e >= 2000 && e < 3000)
		return SQLR_LOST; /* client errors: the connection is not usable */
	switch (e) {
	case ER_SERVER_SHUTDOWN:
	case ER_CONNECTION_KILLED:
	case ER_NET_READ_ERROR:
	case ER_NET_READ_INTERRUPTED:
	case ER_NET_ERROR_ON_WRITE:
	case ER_NET_WRITE_INTERRUPTED:
	case ER_NET_PACKETS_OUT_OF_ORDER:
	case ER_NEW_ABORTING_CONNECTION:
	case ER_UNKNOWN_STMT_HANDLER: /* the server forgot our statements */
	case ER_NEED_REPREPARE:
		return SQLR_LOST;
	case ER_LOCK_WAIT_TIMEOUT:
	case ER_LOCK_DEADLOCK:
	case ER_OPTION_PREVENTS_STATEMENT: /* read_only */
	case ER_READ_ONLY_MODE:
	case ER_CANT_EXECUTE_IN_READ_ONLY_TRANSACTION:
	case ER_DISK_FULL:
	case ER_RECORD_FILE_FULL:
	case ER_OUT_OF_RESOURCES:
	case ER_OUTOFMEMORY:
	case ER_CON_COUNT_ERROR:
	case ER_TOO_MANY_USER_CONNECTIONS:
	case ER_QUERY_INTERRUPTED:
	case ER_STATEMENT_TIMEOUT:
	case ER_TABLEACCESS_DENIED_ERROR:
	case ER_COLUMNACCESS_DENIED_ERROR:
	case ER_DBACCESS_DENIED_ERROR:
	case ER_LOCK_TABLE_FULL:
		return SQLR_RETRY;
	default:
		return SQLR_FAIL;
	}
}

static int db_error(pconn *c, const char *what)
{
	unsigned int e = mysql_errno(c->db);
	snprintf(c->err, sizeof(c->err), "%s: %s (%u)", what, mysql_error(c->db), e);
	int rc = classify(e);
	return rc == SQLR_OK ? SQLR_LOST : rc;
}

static int stmt_error(pconn *c, MYSQL_STMT *st, const char *what)
{
	unsigned int e = mysql_stmt_errno(st);
	snprintf(c->err, sizeof(c->err), "%s: %s (%u)", what, mysql_stmt_error(st), e);
	int rc = classify(e);
	return rc == SQLR_OK ? SQLR_FAIL : rc;
}

static const char *drv_errmsg(pconn *c) { return c->err; }

/* autocommit is off: a transaction begins with its first statement */
static int drv_begin(pconn *c)
{
	(void)c;
	return SQLR_OK;
}

static int drv_commit(pconn *c) { return mysql_commit(c->db) ? db_error(c, "COMMIT") : SQLR_OK; }

static int drv_rollback(pconn *c)
{
	return mysql_rollback(c->db) ? db_error(c, "ROLLBACK") : SQLR_OK;
}

static void stmt_drop(void *st) { mysql_stmt_close(st); }

static MYSQL_STMT *prepared(pconn *c, const void *key, const char *text, int *rc)
{
	sql_stmt_slot *s = sql_stmt_find(&c->stmts, key);
	if (s)
		return s->stmt;
	MYSQL_STMT *st = mysql_stmt_init(c->db);
	if (!st) {
		*rc = db_error(c, "mysql_stmt_init");
		return NULL;
	}
	if (mysql_stmt_prepare(st, text, (unsigned long)strlen(text))) {
		*rc = stmt_error(c, st, "prepare");
		mysql_stmt_close(st);
		return NULL;
	}
	my_bool on = 1;
	mysql_stmt_attr_set(st, STMT_ATTR_UPDATE_MAX_LENGTH, &on);
	s = sql_stmt_add(&c->stmts, key);
	if (!s) {
		mysql_stmt_close(st);
		snprintf(c->err, sizeof(c->err), "out of memory");
		*rc = SQLR_RETRY;
		return NULL;
	}
	s->stmt = st;
	s->nparams = (uint32_t)mysql_stmt_param_count(st);
	return st;
}

static bool is_int_type(enum enum_field_types t)
{
	return t == MYSQL_TYPE_TINY || t == MYSQL_TYPE_SHORT || t == MYSQL_TYPE_LONG ||
	       t == MYSQL_TYPE_INT24 || t == MYSQL_TYPE_LONGLONG || t == MYSQL_TYPE_YEAR ||
	       t == MYSQL_TYPE_BIT;
}

#define MAX_COLS 16

/* Reads the buffered result of st row by row into cb. */
static int read_rows(pconn *c, MYSQL_STMT *st, sql_row_fn cb, void *ud)
{
	MYSQL_RES *meta = mysql_stmt_result_metadata(st);
	if (!meta)
		return SQLR_OK;
	int rc = SQLR_OK;
	char *buf = NULL;
	if (mysql_stmt_store_result(st)) {
		rc = stmt_error(c, st, "reading rows");
		goto done;
	}
	unsigned int nf = mysql_num_fields(meta);
	if (nf > MAX_COLS)
		nf = MAX_COLS;
	MYSQL_FIELD *f = mysql_fetch_fields(meta);
	MYSQL_BIND b[MAX_COLS];
	unsigned long lens[MAX_COLS];
	my_bool nulls[MAX_COLS];
	long long ints[MAX_COLS];
	size_t total = 0;
	for (unsigned int k = 0; k < nf; k++)
		if (!is_int_type(f[k].type))
			total += f[k].max_length + 1;
	buf = malloc(total + 1);
	if (!buf) {
		snprintf(c->err, sizeof(c->err), "out of memory");
		rc = SQLR_RETRY;
		goto done;
	}
	memset(b, 0, sizeof(b));
	size_t off = 0;
	for (unsigned int k = 0; k < nf; k++) {
		b[k].is_null = &nulls[k];
		b[k].length = &lens[k];
		if (is_int_type(f[k].type)) {
			b[k].buffer_type = MYSQL_TYPE_LONGLONG;
			b[k].buffer = &ints[k];
		} else {
			b[k].buffer_type = f[k].charsetnr == 63 ? MYSQL_TYPE_BLOB : MYSQL_TYPE_STRING;
			b[k].buffer = buf + off;
			b[k].buffer_length = f[k].max_length + 1;
			off += f[k].max_length + 1;
		}
	}
	if (mysql_stmt_bind_result(st, b)) {
		rc = stmt_error(c, st, "binding columns");
		goto done;
	}
	for (;;) {
		int r = mysql_stmt_fetch(st);
		if (r == MYSQL_NO_DATA)
			break;
		if (r == 1) {
			rc = stmt_error(c, st, "fetch");
			break;
		}
		if (r == MYSQL_DATA_TRUNCATED) {
			/* the buffers are sized from max_length: never truncate silently */
			snprintf(c->err, sizeof(c->err), "fetch: a column did not fit its buffer");
			rc = SQLR_FAIL;
			break;
		}
		sql_val cols[MAX_COLS];
		for (unsigned int k = 0; k < nf; k++) {
			if (nulls[k])
				cols[k] = SQLV_NUL;
			else if (is_int_type(f[k].type))
				cols[k] = SQLV_I(ints[k]);
			else if (b[k].buffer_type == MYSQL_TYPE_BLOB)
				cols[k] = SQLV_B(b[k].buffer, lens[k]);
			else
				cols[k] = SQLV_T(b[k].buffer, lens[k]);
		}
		if (cb && cb(ud, cols, (int)nf))
			break;
	}
done:
	mysql_stmt_free_result(st);
	mysql_free_result(meta);
	free(buf);
	return rc;
}

static int drv_exec(pconn *c, const void *key, const char *text, const sql_val *v, int nv,
                    sql_row_fn cb, void *ud)
{
	int rc = SQLR_FAIL;
	MYSQL_STMT *st = prepared(c, key, text, &rc);
	if (!st)
		return rc;
	if (mysql_stmt_param_count(st) != (unsigned long)nv) {
		snprintf(c->err, sizeof(c->err), "the statement has %lu parameters, %d values given",
		         mysql_stmt_param_count(st), nv);
		return SQLR_FAIL;
	}
	MYSQL_BIND sb[64], *b = nv <= 64 ? sb : calloc((size_t)nv, sizeof(*b));
	if (!b) {
		snprintf(c->err, sizeof(c->err), "out of memory");
		return SQLR_RETRY;
	}
	memset(b, 0, sizeof(*b) * (size_t)(nv > 0 ? nv : 0));
	for (int i = 0; i < nv; i++) {
		switch (v[i].type) {
		case SQLV_INT:
			b[i].buffer_type = MYSQL_TYPE_LONGLONG;
			b[i].buffer = (void *)&v[i].i;
			break;
		case SQLV_TEXT:
		case SQLV_BLOB:
			b[i].buffer_type = v[i].type == SQLV_TEXT ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
			b[i].buffer = (void *)(v[i].p ? v[i].p : "");
			b[i].buffer_length = (unsigned long)v[i].len;
			break;
		default: b[i].buffer_type = MYSQL_TYPE_NULL; break;
		}
	}
	if (nv && mysql_stmt_bind_param(st, b))
		rc = stmt_error(c, st, "bind");
	else if (mysql_stmt_execute(st))
		rc = stmt_error(c, st, "execute");
	else
		rc = read_rows(c, st, cb, ud);
	if (b != sb)
		free(b);
	return rc;
}

static const sql_driver mysql_driver = {
	.dialect = &mysql_dialect,
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
		mysql_close(c->db);
	free(c);
}

static int run_schema(void *ud, const char *stmt)
{
	pconn *c = ud;
	if (mysql_real_query(c->db, stmt, (unsigned long)strlen(stmt))) {
		db_error(c, "creating the tables");
		return -1;
	}
	MYSQL_RES *r = mysql_store_result(c->db);
	if (r)
		mysql_free_result(r);
	return 0;
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
	c->base.drv = &mysql_driver;
	c->base.host = host;
	c->base.payload_base64 = cfg->payload_encoding == 1;
	char h[256];
	int port;
	sql_net_addr(cfg, h, &port);
	c->db = mysql_init(NULL);
	if (!c->db) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	unsigned int ct = (unsigned int)((cfg->connect_timeout_ms + 999) / 1000);
	unsigned int rt = (unsigned int)((cfg->command_timeout_ms + 999) / 1000);
	my_bool off = 0, on = 1;
	mysql_optionsv(c->db, MYSQL_OPT_CONNECT_TIMEOUT, &ct);
	mysql_optionsv(c->db, MYSQL_OPT_READ_TIMEOUT, &rt);
	mysql_optionsv(c->db, MYSQL_OPT_WRITE_TIMEOUT, &rt);
	mysql_optionsv(c->db, MYSQL_OPT_RECONNECT, &off); /* we reconnect, and retry */
	mysql_optionsv(c->db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
	mysql_optionsv(c->db, MYSQL_INIT_COMMAND, "SET time_zone = '+00:00'");
	if (cfg->ssl) {
		mysql_optionsv(c->db, MYSQL_OPT_SSL_ENFORCE, &on);
		if (cfg->ssl_ca && cfg->ssl_ca[0])
			mysql_optionsv(c->db, MYSQL_OPT_SSL_CA, cfg->ssl_ca);
		if (cfg->ssl_cert && cfg->ssl_cert[0])
			mysql_optionsv(c->db, MYSQL_OPT_SSL_CERT, cfg->ssl_cert);
		if (cfg->ssl_key && cfg->ssl_key[0])
			mysql_optionsv(c->db, MYSQL_OPT_SSL_KEY, cfg->ssl_key);
		mysql_optionsv(c->db, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, cfg->ssl_verify ? &on : &off);
	}
	if (!mysql_real_connect(c->db, h, cfg->user, cfg->password, cfg->database,
	                        (unsigned int)port, NULL, 0)) {
		snprintf(err, errlen, "%s:%d: %s", h, port, mysql_error(c->db));
		goto fail;
	}
	if (mysql_autocommit(c->db, 0)) {
		snprintf(err, errlen, "%s:%d: autocommit off: %s", h, port, mysql_error(c->db));
		goto fail;
	}
	if (cfg->create_tables) {
		if (sql_net_each_statement(mysql_schema_sql, run_schema, c) || mysql_commit(c->db)) {
			snprintf(err, errlen, "%s:%d: %s", h, port, c->err[0] ? c->err : mysql_error(c->db));
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

static int be_ping(pconn *c) { return mysql_ping(c->db) ? -1 : 0; }

static int be_raw_compile(const char *const *texts, size_t n, void **out, char *err,
                          size_t errlen)
{
	return sql_raw_compile(texts, n, SQL_LEX_MYSQL, out, err, errlen);
}

static int be_run_batch(pconn *c, pjob **jobs, size_t n) { return sql_run_batch(c, jobs, n); }

const backend_type mysql_backend = {
	.api = PERSIST_BACKEND_API,
	.name = "mysql",
	.title = "MySQL / MariaDB",
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
