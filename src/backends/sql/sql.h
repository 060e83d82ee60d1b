/*
 * sql.h - what the SQL family of backends (SQLite, MySQL, PostgreSQL,
 * TimescaleDB) share: the built-in functions, the `${var}` compiler for raw
 * actions, and the batch runner.
 *
 * Design
 * ------
 * The built-in functions are written once, here, against two small tables
 * a database supplies:
 *   - sql_dialect: the text of each built-in statement in that database's
 *     syntax (placeholders, upsert), with parameters in a fixed order
 *     documented below;
 *   - sql_driver: begin/commit/rollback and exec(statement, bound values,
 *     row callback), with prepared statements cached per connection.
 * Every value from a client (client id, topic, payload, user name) is bound as
 * a parameter; no statement text is ever built from one.
 *
 * A batch runs in one transaction. If a job fails for good (a constraint, a
 * bad raw statement) the transaction is rolled back and the jobs are run one
 * transaction each, so one bad job fails alone. A recoverable error (busy,
 * I/O, full, read-only, connection lost) rolls back and marks the jobs for
 * retry; the framework retries them in order.
 *
 * Times: datetime columns get UTC text "YYYY-MM-DD HH:MM:SS" (what the spec's
 * tables show). Message order and read positions use the 32-character hex
 * message id, which sorts in publish order.
 */
#ifndef KEEPMQ_SQL_H
#define KEEPMQ_SQL_H

#include "persist/persist.h"

enum sqlv_type { SQLV_NULL = 0, SQLV_INT, SQLV_TEXT, SQLV_BLOB };

/* A bound value or a column read. Text and blobs are not NUL-terminated. */
typedef struct sql_val {
	uint8_t type;
	int64_t i;
	const void *p;
	size_t len;
} sql_val;

#define SQLV_I(x) ((sql_val){SQLV_INT, (x), NULL, 0})
#define SQLV_T(ptr, n) ((sql_val){SQLV_TEXT, 0, (ptr), (n)})
#define SQLV_B(ptr, n) ((sql_val){SQLV_BLOB, 0, (ptr), (n)})
#define SQLV_NUL ((sql_val){SQLV_NULL, 0, NULL, 0})

/* exec results. SQLR_RETRY: the database refused for now (busy, locked,
 * read-only, full), try again on the same connection; SQLR_LOST: the
 * connection itself broke (dropped, killed, timed out), so the jobs are
 * retried on a new one. */
enum sql_rc { SQLR_OK = 0, SQLR_FAIL = 1, SQLR_RETRY = 2, SQLR_LOST = 3 };

/* Called per result row; return 0 to continue, non-zero to stop reading. */
typedef int (*sql_row_fn)(void *ud, const sql_val *cols, int ncols);

/*
 * Built-in statements, with their parameters in order. Rows are read by
 * position, in the order given after "->".
 */
enum sql_stmt {
	SQL_CLIENT_CONNECTED,    /* clientid, node, online_at */
	SQL_CLIENT_DISCONNECTED, /* clientid, node, offline_at */
	SQL_SUB_LOOKUP,          /* clientid -> topic, qos */
	SQL_MSG_INSERT,          /* msgid, topic, sender, node, qos, retain, payload, arrived */
	SQL_MSG_FETCH_TOPIC,     /* topic, after_msgid, limit -> msgid, topic, sender, qos, retain, payload */
	SQL_MSG_FETCH_RANGE,     /* lo, hi, after_msgid, limit -> (same) ; lo <= topic < hi */
	SQL_MSG_FETCH_ALL,       /* after_msgid, limit -> (same) */
	SQL_RETAIN_UPSERT,       /* topic, msgid, sender, node, qos, payload, arrived */
	SQL_RETAIN_DELETE,       /* topic */
	SQL_RETAIN_GET,          /* topic -> msgid, topic, sender, qos, payload */
	SQL_RETAIN_RANGE,        /* lo, hi, after_topic, limit -> (same), ordered by topic */
	SQL_RETAIN_ALL,          /* after_topic, limit -> (same), ordered by topic */
	SQL_ACKED_GET,           /* clientid, topic -> msgid */
	SQL_ACKED_UPSERT,        /* clientid, topic, msgid, created ; only moves forward */
	SQL_ACKED_DELETE,        /* clientid, topic */
	SQL__COUNT
};

/* The lexical rules sql_tmpl_compile applies (the placeholder style
 * follows: '?' for SQLite and MySQL, $1, $2, ... for PostgreSQL). */
#define SQL_LEX_SQLITE '?'
#define SQL_LEX_PGSQL '$'
#define SQL_LEX_MYSQL 'm'

typedef struct sql_dialect {
	const char *name;
	const char *stmt[SQL__COUNT];
	char placeholder; /* '?' or '$' (PostgreSQL: $1, $2, ...) */
	/*
	 * Optional: many SQL_MSG_INSERT rows in one statement. The statement is
	 * msg_insert_head, then n rows "(...)" of SQL_MSG_INSERT's 8 parameters
	 * separated by ", ", then msg_insert_tail. NULL: one row per statement.
	 */
	const char *msg_insert_head;
	const char *msg_insert_tail;
	/*
	 * Optional, per statement: the parameters it binds, as digits indexing
	 * the statement's parameters listed above ("01223": the third one twice).
	 * For positional '?' dialects that need a value twice. NULL: in order.
	 */
	const char *argmap[SQL__COUNT];
} sql_dialect;

typedef struct sql_driver {
	const sql_dialect *dialect;
	int (*begin)(pconn *c);
	int (*commit)(pconn *c);
	int (*rollback)(pconn *c);
	/*
	 * Runs one statement. `key` identifies it for the connection's statement
	 * cache (the same key always comes with the same text). Values are
	 * bound in order. Returns an sql_rc; on SQLR_FAIL/RETRY a message is
	 * available from errmsg.
	 */
	int (*exec)(pconn *c, const void *key, const char *text, const sql_val *v, int nv,
	            sql_row_fn cb, void *ud);
	const char *(*errmsg)(pconn *c);
} sql_driver;

/* The SQL-family part of a backend's connection: every driver's pconn
 * starts with one of these. */
typedef struct sql_conn {
	const sql_driver *drv;
	const persist_host *host;
	/* payload columns of the built-in tables hold base64 text instead of
	 * bytes (for operators whose payload column is text) */
	bool payload_base64;
} sql_conn;

/* Values of the payload_encoding pool key ("binary", "base64"), and its
 * documentation, for the backends that offer it. */
extern const char *const sql_payload_encodings[];
#define SQL_PAYLOAD_KEYDOC                                                                       \
	"How payloads are stored in the payload columns of mqtt_msg and mqtt_retain. `binary`: the "  \
	"bytes as they are (the column must be binary: BLOB, bytea). `base64`: base64 text, for "     \
	"tables whose payload column is text, as in the original's schema; keepmq decodes it when "   \
	"it reads the rows back. Raw actions bind ${payload} as bytes either way."


/* ---------------------------------------------------------------- built-in functions */

enum sql_func {
	SQLF_CLIENT_CONNECTED,
	SQLF_CLIENT_DISCONNECTED,
	SQLF_SUBSCRIBE_LOOKUP,
	SQLF_MESSAGE_FETCH,
	SQLF_RETAIN_LOOKUP,
	SQLF_MESSAGE_PUBLISH,
	SQLF_MESSAGE_STORE,
	SQLF_MESSAGE_RETAIN,
	SQLF_RETAIN_DELETE,
	SQLF_MESSAGE_ACKED,
	SQLF_ACKED_DELETE,
	SQLF__COUNT
};

/* The function table every SQL backend offers (names as in the spec). */
extern const pfunc sql_funcs[SQLF__COUNT];

/* run_batch for every SQL backend: c must start with an sql_conn. */
int sql_run_batch(pconn *c, pjob **jobs, size_t n);

/* One job, on the connection, inside the caller's transaction. */
int sql_run_job(sql_conn *sc, pconn *c, pjob *j);

/* The functions, by file. Each returns an sql_rc. */
int sql_client_connected(sql_conn *sc, pconn *c, pjob *j);    /* clients.c */
int sql_client_disconnected(sql_conn *sc, pconn *c, pjob *j); /* clients.c */
int sql_subscribe_lookup(sql_conn *sc, pconn *c, pjob *j);    /* subs.c */
int sql_message_store(sql_conn *sc, pconn *c, pjob *j);       /* msgs.c */
int sql_message_fetch(sql_conn *sc, pconn *c, pjob *j);       /* msgs.c */
int sql_message_retain(sql_conn *sc, pconn *c, pjob *j);      /* retain.c */
int sql_retain_delete(sql_conn *sc, pconn *c, pjob *j);       /* retain.c */
int sql_retain_lookup(sql_conn *sc, pconn *c, pjob *j);       /* retain.c */
int sql_message_acked(sql_conn *sc, pconn *c, pjob *j);       /* acked.c */
int sql_acked_delete(sql_conn *sc, pconn *c, pjob *j);        /* acked.c */

/* ---------------------------------------------------------------- raw actions */

/* The variables of ${var}. */
enum sql_var {
	SV_CLIENTID,
	SV_USERNAME,
	SV_PEERHOST,
	SV_NODE,
	SV_TOPIC,
	SV_QOS,
	SV_MSGID,
	SV_PAYLOAD,
	SV_RETAIN,
	SV_TIMESTAMP,
	SV__COUNT
};

/* One statement of a raw action: the text with placeholders, and which
 * variable each placeholder binds. */
typedef struct sql_tmpl {
	char *text;
	uint8_t *vars;
	uint32_t nvars;
} sql_tmpl;

typedef struct sql_raw {
	uint32_t n;
	sql_tmpl t[];
} sql_raw;

/*
 * Compiles `src`, one statement: each ${name} outside quotes and comments
 * becomes a placeholder ('?' or '$n') bound to that variable; the rest is
 * copied as it is. The placeholder style also names the dialect whose
 * lexical rules apply: '?' SQLite, '$' PostgreSQL (template.c says what
 * each understands). Errors, each with its offset: an unknown name, ${
 * without }, a ${name} inside a quoted literal or identifier (it would not
 * be a parameter) or inside a comment (it would never be bound), SQL's own
 * parameters (SQLite: ?, ?NNN, :name, @name, #name, $name; PostgreSQL: $N),
 * which would shift the bound values, a second statement after ';' (only
 * the first would run; a trailing ';', spaces and comments are fine), a
 * ${name} whose placeholder would merge with what is next to it ("${qos}1"),
 * an unterminated quote or comment, no SQL at all. Returns 0 or -1 with a
 * message.
 */
int sql_tmpl_compile(const char *src, char placeholder, sql_tmpl *out, char *err, size_t errlen);
/* placeholder may also be SQL_LEX_MYSQL: '?' placeholders, MySQL's rules. */
void sql_tmpl_free(sql_tmpl *t);
/* raw_compile / raw_free for backend_type. */
int sql_raw_compile(const char *const *texts, size_t n, char placeholder, void **out, char *err,
                    size_t errlen);
void sql_raw_free(void *raw);
/* Runs a raw action's statements for a job. */
int sql_raw_run(sql_conn *sc, pconn *c, pjob *j);
/* The value of a variable for a job; scratch holds text it had to format. */
sql_val sql_var_value(int var, const pjob *j, const char *node, char scratch[48]);
/* Name of a variable ("clientid"). */
const char *sql_var_name(int var);

/* ---------------------------------------------------------------- helpers */

/* "YYYY-MM-DD HH:MM:SS" (UTC) of a wall-clock time in ms. out: 20 bytes. */
void sql_datetime(uint64_t ms, char out[20]);
/* The lowest message id text of messages younger than `range_ms` before
 * now_ms (for time_range), into out (33 bytes). */
void sql_msgid_floor(uint64_t now_ms, uint64_t range_ms, char out[33]);
/* Reads a hex message id back; returns 0, -1 if it is not one of ours. */
int sql_msgid_parse(const char *hex, size_t len, uint8_t id[16]);
/* The read position of (client id, filter) into out; *len 0 if none. */
int sql_read_position(sql_conn *sc, pconn *c, mqtt_str cid, mqtt_str filter, char out[101],
                      size_t *len);
/* Builds a message from stored columns (NULL-safe). Its id is parsed from
 * msgid when it is one of ours (its time then comes from the id). Returns a
 * new reference, or NULL. */
kmq_msg *sql_row_msg(sql_val msgid, sql_val topic, sql_val sender, sql_val qos, sql_val retain,
                     sql_val payload);
/* The values of SQL_MSG_INSERT for job j (id: 33 bytes, at: 20 bytes,
 * *tmp: a buffer the caller frees, set when the payload had to be encoded).
 * Returns 0, -1 if out of memory. */
int sql_msg_insert_values(sql_conn *sc, const pjob *j, sql_val v[8], char id[33], char at[20],
                          char **tmp);
/* The payload to bind for a built-in table (base64 when payload_base64):
 * *tmp is set to a buffer the caller frees when one was needed. Returns 0,
 * -1 if out of memory. */
int sql_payload_in(sql_conn *sc, const kmq_msg *m, sql_val *out, char **tmp);
/* A payload column read back, decoded when payload_base64 (into *tmp, which
 * the caller frees). A column that is not valid base64 is taken as it is. */
sql_val sql_payload_out(sql_conn *sc, sql_val col, char **tmp);
/* true for SQLR_RETRY and SQLR_LOST */
static inline bool sql_rc_retryable(int rc) { return rc == SQLR_RETRY || rc == SQLR_LOST; }
/* Runs built-in statement k. */
int sql_exec_builtin(sql_conn *sc, pconn *c, int k, const sql_val *v, int nv, sql_row_fn cb,
                     void *ud);
/* The half-open text range [lo, hi) holding every topic that begins with
 * the filter's literal prefix (before its first wildcard). Returns false if
 * the prefix is empty (every topic). lo/hi point into buf (2 * len + 2). */
bool sql_prefix_range(mqtt_str filter, char *buf, mqtt_str *lo, mqtt_str *hi);

#endif
