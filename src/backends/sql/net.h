/*
 * net.h - what the SQL backends that talk to a server (MySQL, PostgreSQL)
 * share besides the SQL layer: their pool settings and a per-connection
 * cache of prepared statements.
 *
 * The two databases name their settings as the original did (MySQL `user`,
 * PostgreSQL `username`); both land in one struct, so the connection code
 * of each reads the same fields.
 */
#ifndef KEEPMQ_SQL_NET_H
#define KEEPMQ_SQL_NET_H

#include "backends/sql/sql.h"
#include <stddef.h>

#include "config/config.h"

typedef struct sql_net_cfg {
	char *server;   /* host:port */
	char *user;
	char *password;
	char *database;
	bool ssl;
	bool ssl_verify;
	char *ssl_ca;
	char *ssl_cert;
	char *ssl_key;
	uint64_t connect_timeout_ms;
	uint64_t command_timeout_ms;
	int payload_encoding; /* index into sql_payload_encodings */
	bool create_tables;
} sql_net_cfg;

#define SQL_NET_O(f) offsetof(sql_net_cfg, f)

/* The pool keys after `server` and the user name, the same for both
 * databases; `what` names the schema file. */
#define SQL_NET_COMMON_KEYS(what)                                                                        \
	{"password", CFG_STRING, "", 0, 0, NULL, SQL_NET_O(password), NULL, CFG_F_SECRET,                  \
	 "The password; empty: none."},                                                           \
	{"database", CFG_STRING, "mqtt", 0, 0, NULL, SQL_NET_O(database), NULL, 0,                        \
	 "The database holding keepmq's tables (etc/sql/" what ".sql)."},                         \
	{"ssl", CFG_BOOL, "off", 0, 0, NULL, SQL_NET_O(ssl), NULL, 0,                                    \
	 "Connect with TLS. The connection fails if the server does not offer it."},               \
	{"ssl.verify", CFG_BOOL, "off", 0, 0, NULL, SQL_NET_O(ssl_verify), NULL, 0,                      \
	 "With `ssl`: check the server's certificate against `ssl.cacertfile` and its name "       \
	 "against the host of `server`."},                                                         \
	{"ssl.cacertfile", CFG_PATH, "", 0, 0, NULL, SQL_NET_O(ssl_ca), NULL, 0,                         \
	 "With `ssl`: the CA certificates (PEM) that sign the server's certificate."},            \
	{"ssl.certfile", CFG_PATH, "", 0, 0, NULL, SQL_NET_O(ssl_cert), NULL, 0,                         \
	 "With `ssl`: keepmq's client certificate (PEM), for servers that ask for one."},          \
	{"ssl.keyfile", CFG_PATH, "", 0, 0, NULL, SQL_NET_O(ssl_key), NULL, 0,                           \
	 "With `ssl`: the private key (PEM) of `ssl.certfile`."},                                 \
	{"connect_timeout", CFG_DURATION, "5s", 1000, 600000, NULL, SQL_NET_O(connect_timeout_ms), NULL, \
	 0, "How long connecting (and logging in) may take."},                                     \
	{"command_timeout", CFG_DURATION, "30s", 1000, 3600000, NULL, SQL_NET_O(command_timeout_ms),     \
	 NULL, 0,                                                                                  \
	 "How long a connection waits for the server's answer before it counts as lost; the "     \
	 "batch is then retried on a new connection."},                                            \
	{"payload_encoding", CFG_ENUM, "binary", 0, 0, sql_payload_encodings,                     \
	 SQL_NET_O(payload_encoding), NULL, 0, SQL_PAYLOAD_KEYDOC},                                        \
	{"create_tables", CFG_BOOL, "on", 0, 0, NULL, SQL_NET_O(create_tables), NULL, 0,                 \
	 "Create keepmq's tables (etc/sql/" what ".sql) when they do not exist, each time a "     \
	 "connection opens. Off: the operator creates them; a missing table then fails the "      \
	 "jobs that use it."}


/* pool_check: a server that parses as host:port, a database name. */
int sql_net_check(const void *cfg, char *err, size_t errlen);
/* The host and port of cfg->server (checked by sql_net_check). */
void sql_net_addr(const sql_net_cfg *cfg, char host[256], int *port);

/*
 * Prepared statements of one connection, by key (sql_driver.exec's key: the
 * address of the statement's text in its dialect, or of a compiled raw
 * template). A handful of keys per connection: a linear search is the
 * fastest lookup there is.
 */
typedef struct sql_stmt_slot {
	const void *key;
	void *stmt;
	uint32_t nparams;
	uint32_t *types; /* driver's own per-parameter info (PostgreSQL: type oids) */
} sql_stmt_slot;

typedef struct sql_stmt_cache {
	sql_stmt_slot *v;
	size_t n, cap;
} sql_stmt_cache;

/* The slot of key, or NULL. */
sql_stmt_slot *sql_stmt_find(sql_stmt_cache *c, const void *key);
/* A new slot for key (the caller fills it); NULL if out of memory. */
sql_stmt_slot *sql_stmt_add(sql_stmt_cache *c, const void *key);
/* Frees every slot's types and calls drop(stmt) on each; empties c. */
void sql_stmt_clear(sql_stmt_cache *c, void (*drop)(void *stmt));

/* Splits a schema script into statements on ';' at the end of a line and
 * calls run(ud, statement) for each non-blank one; stops at the first
 * non-zero return and returns it. The script must not put ";\n" inside a
 * literal or comment (ours do not). */
int sql_net_each_statement(const char *script, int (*run)(void *ud, const char *stmt), void *ud);

#endif
