/*
 * clients.c - on_client_connected / on_client_disconnected: the mqtt_client
 * table (state '1' online, '0' offline, node, online_at, offline_at).
 *
 * A late disconnect of an old connection must not mark a newer one offline.
 * On one node this cannot happen: both events of a client id are queued on
 * the same pool connection in the order they happened. Across nodes sharing
 * the table, the disconnect only applies while the row still names this
 * node (the dialect's statement checks it).
 */
#include <string.h>

#include "backends/sql/sql.h"

/* Both statements take (clientid, node, time). */
static int client_state(sql_conn *sc, pconn *c, pjob *j, int stmt)
{
	char at[20];
	sql_datetime(j->ts_ms, at);
	const char *node = sc->host && sc->host->node ? sc->host->node : "";
	sql_val v[3] = {SQLV_T(j->clientid.p, j->clientid.len), SQLV_T(node, strlen(node)),
	                SQLV_T(at, 19)};
	return sql_exec_builtin(sc, c, stmt, v, 3, NULL, NULL);
}

int sql_client_connected(sql_conn *sc, pconn *c, pjob *j)
{
	return client_state(sc, c, j, SQL_CLIENT_CONNECTED);
}

int sql_client_disconnected(sql_conn *sc, pconn *c, pjob *j)
{
	return client_state(sc, c, j, SQL_CLIENT_DISCONNECTED);
}
