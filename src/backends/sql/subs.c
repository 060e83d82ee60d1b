/*
 * subs.c - on_subscribe_lookup: the client's rows of mqtt_sub, which the
 * operator provisions (keepmq never writes that table). The broker then
 * subscribes the client to them as if it had sent SUBSCRIBE.
 */
#include "backends/sql/sql.h"

static int on_row(void *ud, const sql_val *col, int n)
{
	pjob *j = ud;
	if (n < 2 || col[0].type == SQLV_NULL || col[0].len == 0 || col[0].len > 65535)
		return 0; /* a row without a topic: nothing to subscribe */
	int64_t qos = col[1].type == SQLV_INT ? col[1].i : 0;
	if (qos < 0 || qos > 2)
		qos = qos < 0 ? 0 : 2;
	if (presult_add_sub(j->result, col[0].p, col[0].len, (uint8_t)qos))
		return 1;
	return 0;
}

int sql_subscribe_lookup(sql_conn *sc, pconn *c, pjob *j)
{
	sql_val v[1] = {SQLV_T(j->clientid.p, j->clientid.len)};
	return sql_exec_builtin(sc, c, SQL_SUB_LOOKUP, v, 1, on_row, j);
}
