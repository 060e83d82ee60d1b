/*
 * acked.c - read positions in mqtt_acked: on_message_acked moves them, and
 * on_acked_delete (session.unsubscribed) forgets one.
 *
 * A position is keyed by (client id, subscription filter) on write and on
 * read alike: an acknowledged message moves the position of every filter of
 * the client that matches its topic (the broker passes them with the event).
 * The stored value is the message's id text, and the upsert only moves it
 * forward, so an acknowledgement processed late can never move a position
 * back and re-deliver. The spec's integer `mid` column is filled with the
 * mqtt_msg row id where that row exists, for tools that read it.
 */
#include <string.h>

#include "backends/sql/sql.h"

int sql_message_acked(sql_conn *sc, pconn *c, pjob *j)
{
	char id[33], at[20];
	msgid_to_hex(j->msg->id, id);
	sql_datetime(j->ts_ms, at);
	for (uint32_t i = 0; i < j->nfilters; i++) {
		sql_val v[4] = {SQLV_T(j->clientid.p, j->clientid.len),
		                SQLV_T(j->filters[i].p, j->filters[i].len), SQLV_T(id, 32),
		                SQLV_T(at, 19)};
		int rc = sql_exec_builtin(sc, c, SQL_ACKED_UPSERT, v, 4, NULL, NULL);
		if (rc != SQLR_OK)
			return rc;
	}
	return SQLR_OK;
}

int sql_acked_delete(sql_conn *sc, pconn *c, pjob *j)
{
	sql_val v[2] = {SQLV_T(j->clientid.p, j->clientid.len), SQLV_T(j->topic.p, j->topic.len)};
	return sql_exec_builtin(sc, c, SQL_ACKED_DELETE, v, 2, NULL, NULL);
}
