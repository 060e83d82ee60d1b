/*
 * retain.c - the mqtt_retain table: on_message_retain upserts the row of a
 * topic, on_retain_delete removes it (a retained PUBLISH with an empty
 * payload), on_retain_lookup reads the rows matching a new subscription -
 * wildcard filters included, narrowed by prefix in the database and
 * confirmed with the broker's matcher.
 *
 * These jobs are queued by topic rather than by client id, so two clients
 * setting the same retained topic are written in the order they published.
 */
#include <stdlib.h>
#include <string.h>

#include "backends/sql/sql.h"

int sql_message_retain(sql_conn *sc, pconn *c, pjob *j)
{
	const kmq_msg *m = j->msg;
	char id[33], at[20], *tmp = NULL;
	msgid_to_hex(m->id, id);
	sql_datetime(m->ts_ms, at);
	const char *node = sc->host && sc->host->node ? sc->host->node : "";
	sql_val payload;
	if (sql_payload_in(sc, m, &payload, &tmp))
		return SQLR_RETRY;
	sql_val v[7] = {
		SQLV_T(m->topic.p, m->topic.len), SQLV_T(id, 32), SQLV_T(m->origin.p, m->origin.len),
		SQLV_T(node, strlen(node)),       SQLV_I(m->qos), payload,
		SQLV_T(at, 19),
	};
	int rc = sql_exec_builtin(sc, c, SQL_RETAIN_UPSERT, v, 7, NULL, NULL);
	free(tmp);
	return rc;
}

int sql_retain_delete(sql_conn *sc, pconn *c, pjob *j)
{
	sql_val v[1] = {SQLV_T(j->topic.p, j->topic.len)};
	return sql_exec_builtin(sc, c, SQL_RETAIN_DELETE, v, 1, NULL, NULL);
}

typedef struct look_ctx {
	sql_conn *sc;
	pjob *j;
	mqtt_str filter;
	uint32_t rows;
	char last[65536];
	size_t last_len;
} look_ctx;

static int on_row(void *ud, const sql_val *col, int n)
{
	look_ctx *l = ud;
	if (n < 5)
		return 1;
	l->rows++;
	if (col[1].type == SQLV_NULL || col[1].len > 65535)
		return 0;
	memcpy(l->last, col[1].p, col[1].len);
	l->last_len = col[1].len;
	if (!mqtt_topic_matches(l->filter, (mqtt_str){col[1].p, (uint32_t)col[1].len}))
		return 0;
	char *tmp = NULL;
	kmq_msg *m =
		sql_row_msg(col[0], col[1], col[2], col[3], SQLV_I(1), sql_payload_out(l->sc, col[4], &tmp));
	free(tmp);
	if (m && presult_add_msg(l->j->result, m))
		return 1;
	return 0;
}

int sql_retain_lookup(sql_conn *sc, pconn *c, pjob *j)
{
	mqtt_str group, filter = j->topic;
	mqtt_shared_parse(j->topic, &group, &filter);
	look_ctx *l = calloc(1, sizeof(*l));
	if (!l)
		return SQLR_RETRY;
	l->sc = sc;
	l->j = j;
	l->filter = filter;
	int rc;
	if (!mqtt_topic_is_wildcard(filter)) {
		sql_val v[1] = {SQLV_T(filter.p, filter.len)};
		rc = sql_exec_builtin(sc, c, SQL_RETAIN_GET, v, 1, on_row, l);
		free(l);
		return rc;
	}
	char *rbuf = malloc(2 * (size_t)filter.len + 2);
	if (!rbuf) {
		free(l);
		return SQLR_RETRY;
	}
	mqtt_str lo, hi;
	bool ranged = sql_prefix_range(filter, rbuf, &lo, &hi);
	for (;;) {
		const int page = 500;
		l->rows = 0;
		sql_val after = SQLV_T(l->last, l->last_len);
		if (ranged) {
			sql_val v[4] = {SQLV_T(lo.p, lo.len), SQLV_T(hi.p, hi.len), after, SQLV_I(page)};
			rc = sql_exec_builtin(sc, c, SQL_RETAIN_RANGE, v, 4, on_row, l);
		} else {
			sql_val v[2] = {after, SQLV_I(page)};
			rc = sql_exec_builtin(sc, c, SQL_RETAIN_ALL, v, 2, on_row, l);
		}
		if (rc != SQLR_OK || l->rows < (uint32_t)page)
			break;
	}
	free(rbuf);
	free(l);
	return rc;
}
