/*
 * msgs.c - the mqtt_msg table: on_message_publish / on_message_store write
 * it, on_message_fetch reads it.
 *
 * Fetch (many-to-many): the client's read position for the subscription
 * filter is the message id of the last message it acknowledged under that
 * filter (mqtt_acked, keyed by client id and filter: see acked.c). Messages
 * after it are returned oldest first, in pages, until offline_opts'
 * max_returned_count is reached; time_range moves the start forward to the
 * first id of that age (ids begin with their time, so this is one
 * comparison). A wildcard filter is narrowed in the database to the topics
 * that share its literal prefix and confirmed with the broker's own
 * matcher, so `a/+/c` and `#` work where the original matched exact topics
 * only.
 */
#include <stdlib.h>
#include <string.h>

#include "backends/sql/sql.h"
#include "util/clock.h"

int sql_msg_insert_values(sql_conn *sc, const pjob *j, sql_val v[8], char id[33], char at[20],
                          char **tmp)
{
	const kmq_msg *m = j->msg;
	msgid_to_hex(m->id, id);
	sql_datetime(m->ts_ms, at);
	const char *node = sc->host && sc->host->node ? sc->host->node : "";
	v[0] = SQLV_T(id, 32);
	v[1] = SQLV_T(m->topic.p, m->topic.len);
	v[2] = SQLV_T(m->origin.p, m->origin.len);
	v[3] = SQLV_T(node, strlen(node));
	v[4] = SQLV_I(m->qos);
	v[5] = SQLV_I((m->flags & MSG_F_RETAIN) ? 1 : 0);
	v[7] = SQLV_T(at, 19);
	return sql_payload_in(sc, m, &v[6], tmp);
}

int sql_message_store(sql_conn *sc, pconn *c, pjob *j)
{
	char id[33], at[20], *tmp = NULL;
	sql_val v[8];
	if (sql_msg_insert_values(sc, j, v, id, at, &tmp))
		return SQLR_RETRY;
	int rc = sql_exec_builtin(sc, c, SQL_MSG_INSERT, v, 8, NULL, NULL);
	free(tmp);
	return rc;
}

/* The read position of (client id, filter): copied into pos (up to 100
 * bytes); empty if none. */
typedef struct pos_ctx {
	char pos[101];
	size_t len;
} pos_ctx;

static int on_pos(void *ud, const sql_val *col, int n)
{
	pos_ctx *p = ud;
	if (n >= 1 && col[0].type == SQLV_TEXT && col[0].len <= 100) {
		memcpy(p->pos, col[0].p, col[0].len);
		p->len = col[0].len;
		p->pos[p->len] = 0;
	}
	return 1;
}

int sql_read_position(sql_conn *sc, pconn *c, mqtt_str cid, mqtt_str filter, char out[101],
                      size_t *len)
{
	pos_ctx p = {.len = 0};
	sql_val v[2] = {SQLV_T(cid.p, cid.len), SQLV_T(filter.p, filter.len)};
	int rc = sql_exec_builtin(sc, c, SQL_ACKED_GET, v, 2, on_pos, &p);
	memcpy(out, p.pos, p.len);
	out[p.len] = 0;
	*len = p.len;
	return rc;
}

typedef struct fetch_ctx {
	sql_conn *sc;
	pjob *j;
	mqtt_str filter;
	int64_t want;
	int64_t got;
	uint32_t rows;
	char last[101];
	size_t last_len;
	bool full;
} fetch_ctx;

static int on_msg(void *ud, const sql_val *col, int n)
{
	fetch_ctx *f = ud;
	if (n < 6)
		return 1;
	f->rows++;
	if (col[0].type == SQLV_TEXT && col[0].len <= 100) {
		memcpy(f->last, col[0].p, col[0].len);
		f->last_len = col[0].len;
		f->last[f->last_len] = 0;
	}
	if (col[1].type == SQLV_NULL ||
	    !mqtt_topic_matches(f->filter, (mqtt_str){col[1].p, (uint32_t)col[1].len}))
		return 0;
	char *tmp = NULL;
	kmq_msg *m =
		sql_row_msg(col[0], col[1], col[2], col[3], col[4], sql_payload_out(f->sc, col[5], &tmp));
	free(tmp);
	if (!m)
		return 0;
	if (presult_add_msg(f->j->result, m))
		return 1;
	if (++f->got >= f->want) {
		f->full = true;
		return 1;
	}
	return 0;
}

int sql_message_fetch(sql_conn *sc, pconn *c, pjob *j)
{
	const prule *r = j->rule;
	mqtt_str full = j->topic, group, filter = j->topic;
	if (mqtt_shared_parse(full, &group, &filter) == 1)
		return SQLR_OK; /* a shared group consumes live messages only */
	if (r->max_returned_count == 0)
		return SQLR_OK;
	char after[101];
	size_t alen;
	int rc = sql_read_position(sc, c, j->clientid, full, after, &alen);
	if (rc != SQLR_OK)
		return rc;
	if (r->time_range_ms < (uint64_t)INT64_MAX) {
		char floor[33];
		sql_msgid_floor(clock_wall_ms(), r->time_range_ms, floor);
		if (alen == 0 || strcmp(floor, after) > 0) {
			memcpy(after, floor, 33);
			alen = 32;
		}
	}
	char rbuf[2 * 65536 + 2];
	mqtt_str lo, hi;
	bool wildcard = mqtt_topic_is_wildcard(filter);
	bool ranged = wildcard && filter.len <= 65535 && sql_prefix_range(filter, rbuf, &lo, &hi);
	fetch_ctx f = {.sc = sc, .j = j, .filter = filter, .want = r->max_returned_count};
	memcpy(f.last, after, alen + 1);
	f.last_len = alen;
	for (;;) {
		int64_t page = f.want - f.got;
		if (page > 500)
			page = 500;
		f.rows = 0;
		sql_val pos = SQLV_T(f.last, f.last_len);
		if (!wildcard) {
			sql_val v[3] = {SQLV_T(filter.p, filter.len), pos, SQLV_I(page)};
			rc = sql_exec_builtin(sc, c, SQL_MSG_FETCH_TOPIC, v, 3, on_msg, &f);
		} else if (ranged) {
			sql_val v[4] = {SQLV_T(lo.p, lo.len), SQLV_T(hi.p, hi.len), pos, SQLV_I(page)};
			rc = sql_exec_builtin(sc, c, SQL_MSG_FETCH_RANGE, v, 4, on_msg, &f);
		} else {
			sql_val v[2] = {pos, SQLV_I(page)};
			rc = sql_exec_builtin(sc, c, SQL_MSG_FETCH_ALL, v, 2, on_msg, &f);
		}
		if (rc != SQLR_OK || f.full || f.rows < (uint32_t)page)
			return rc;
	}
}
