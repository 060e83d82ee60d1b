/*
 * dialect.c - the built-in statements in PostgreSQL's syntax (see sql.h for
 * each statement's parameters and columns). Upserts use ON CONFLICT against
 * the UNIQUE constraints of etc/sql/pgsql.sql (the spec's).
 *
 * Topics are compared with COLLATE "C" - byte order - wherever a range or
 * an order is involved: the prefix range of a wildcard filter (sql.h's
 * sql_prefix_range) is a byte range, which a locale's collation would not
 * keep. etc/sql/pgsql.sql declares the topic columns COLLATE "C" so these
 * comparisons use its indexes.
 */
#include "backends/pgsql/pgsql_be.h"

#define MSG_COLS "SELECT msgid, topic, sender, qos, retain, payload FROM mqtt_msg "
#define RET_COLS "SELECT msgid, topic, sender, qos, payload FROM mqtt_retain "
#define C " COLLATE \"C\""

const sql_dialect pgsql_dialect = {
	.name = "pgsql",
	.placeholder = '$',
	.msg_insert_head =
		"INSERT INTO mqtt_msg (msgid, topic, sender, node, qos, retain, payload, arrived) VALUES ",
	/* a batch retried after its COMMIT's answer was lost does not store a
	 * message twice where mqtt_msg has our UNIQUE (msgid) */
	.msg_insert_tail = " ON CONFLICT DO NOTHING",
	.stmt = {
		[SQL_CLIENT_CONNECTED] =
			"INSERT INTO mqtt_client (clientid, state, node, online_at, offline_at) "
			"VALUES ($1, '1', $2, $3, NULL) ON CONFLICT (clientid) DO UPDATE SET "
			"state = '1', node = excluded.node, online_at = excluded.online_at, "
			"offline_at = NULL",
		[SQL_CLIENT_DISCONNECTED] =
			"INSERT INTO mqtt_client (clientid, state, node, offline_at) "
			"VALUES ($1, '0', $2, $3) ON CONFLICT (clientid) DO UPDATE SET "
			"state = '0', offline_at = excluded.offline_at "
			"WHERE mqtt_client.node IS NOT DISTINCT FROM excluded.node",
		[SQL_SUB_LOOKUP] = "SELECT topic, qos FROM mqtt_sub WHERE clientid = $1 ORDER BY id",
		[SQL_MSG_INSERT] =
			"INSERT INTO mqtt_msg (msgid, topic, sender, node, qos, retain, payload, arrived) "
			"VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
		[SQL_MSG_FETCH_TOPIC] = MSG_COLS "WHERE topic = $1 AND msgid > $2 ORDER BY msgid LIMIT $3",
		[SQL_MSG_FETCH_RANGE] = MSG_COLS "WHERE topic >= $1" C " AND topic < $2" C
		                                 " AND msgid > $3 ORDER BY msgid LIMIT $4",
		[SQL_MSG_FETCH_ALL] = MSG_COLS "WHERE msgid > $1 ORDER BY msgid LIMIT $2",
		[SQL_RETAIN_UPSERT] =
			"INSERT INTO mqtt_retain (topic, msgid, sender, node, qos, payload, arrived) "
			"VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (topic) DO UPDATE SET "
			"msgid = excluded.msgid, sender = excluded.sender, node = excluded.node, "
			"qos = excluded.qos, payload = excluded.payload, arrived = excluded.arrived",
		[SQL_RETAIN_DELETE] = "DELETE FROM mqtt_retain WHERE topic = $1",
		[SQL_RETAIN_GET] = RET_COLS "WHERE topic = $1",
		[SQL_RETAIN_RANGE] = RET_COLS "WHERE topic >= $1" C " AND topic < $2" C
		                              " AND topic > $3" C " ORDER BY topic" C " LIMIT $4",
		[SQL_RETAIN_ALL] = RET_COLS "WHERE topic > $1" C " ORDER BY topic" C " LIMIT $2",
		[SQL_ACKED_GET] = "SELECT msgid FROM mqtt_acked WHERE clientid = $1 AND topic = $2",
		[SQL_ACKED_UPSERT] =
			"INSERT INTO mqtt_acked (clientid, topic, mid, msgid, created) "
			"VALUES ($1, $2, (SELECT id FROM mqtt_msg WHERE msgid = $3 LIMIT 1), $3, $4) "
			"ON CONFLICT (clientid, topic) DO UPDATE SET mid = excluded.mid, "
			"msgid = excluded.msgid, created = excluded.created "
			"WHERE mqtt_acked.msgid IS NULL OR excluded.msgid > mqtt_acked.msgid",
		[SQL_ACKED_DELETE] = "DELETE FROM mqtt_acked WHERE clientid = $1 AND topic = $2",
	},
};
