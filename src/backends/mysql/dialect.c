/*
 * dialect.c - the built-in statements in MySQL / MariaDB syntax (see sql.h
 * for each statement's parameters and columns). Upserts use ON DUPLICATE
 * KEY UPDATE against the UNIQUE keys of etc/sql/mysql.sql (the spec's);
 * placeholders are positional '?', so a value used twice is bound twice
 * (argmap).
 *
 * A message row is inserted with "ON DUPLICATE KEY UPDATE id = id": a batch
 * retried after a connection broke during its COMMIT (did it commit or not?)
 * then does not store the message twice, where mqtt_msg has our UNIQUE key
 * on msgid.
 */
#include "backends/mysql/mysql_be.h"

#define MSG_COLS "SELECT msgid, topic, sender, qos, retain, payload FROM mqtt_msg "
#define RET_COLS "SELECT msgid, topic, sender, qos, payload FROM mqtt_retain "
#define MSG_INSERT "INSERT INTO mqtt_msg (msgid, topic, sender, node, qos, retain, payload, arrived) VALUES "
#define MSG_TAIL " ON DUPLICATE KEY UPDATE id = id"
/* the read position only moves forward: every column is set only when the
 * new msgid is greater, and msgid itself last (MySQL applies the
 * assignments in order, each seeing the ones before) */
#define NEWER "(msgid IS NULL OR VALUES(msgid) > msgid)"

const sql_dialect mysql_dialect = {
	.name = "mysql",
	.placeholder = '?',
	.msg_insert_head = MSG_INSERT,
	.msg_insert_tail = MSG_TAIL,
	.stmt = {
		[SQL_CLIENT_CONNECTED] =
			"INSERT INTO mqtt_client (clientid, state, node, online_at, offline_at) "
			"VALUES (?, '1', ?, ?, NULL) ON DUPLICATE KEY UPDATE state = '1', "
			"node = VALUES(node), online_at = VALUES(online_at), offline_at = NULL",
		[SQL_CLIENT_DISCONNECTED] =
			"INSERT INTO mqtt_client (clientid, state, node, offline_at) "
			"VALUES (?, '0', ?, ?) ON DUPLICATE KEY UPDATE "
			"state = IF(node <=> VALUES(node), '0', state), "
			"offline_at = IF(node <=> VALUES(node), VALUES(offline_at), offline_at)",
		[SQL_SUB_LOOKUP] = "SELECT topic, qos FROM mqtt_sub WHERE clientid = ? ORDER BY id",
		[SQL_MSG_INSERT] = MSG_INSERT "(?, ?, ?, ?, ?, ?, ?, ?)" MSG_TAIL,
		[SQL_MSG_FETCH_TOPIC] = MSG_COLS "WHERE topic = ? AND msgid > ? ORDER BY msgid LIMIT ?",
		[SQL_MSG_FETCH_RANGE] = MSG_COLS "WHERE topic >= ? AND topic < ? AND msgid > ? "
		                                 "ORDER BY msgid LIMIT ?",
		[SQL_MSG_FETCH_ALL] = MSG_COLS "WHERE msgid > ? ORDER BY msgid LIMIT ?",
		[SQL_RETAIN_UPSERT] =
			"INSERT INTO mqtt_retain (topic, msgid, sender, node, qos, payload, arrived) "
			"VALUES (?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE msgid = VALUES(msgid), "
			"sender = VALUES(sender), node = VALUES(node), qos = VALUES(qos), "
			"payload = VALUES(payload), arrived = VALUES(arrived)",
		[SQL_RETAIN_DELETE] = "DELETE FROM mqtt_retain WHERE topic = ?",
		[SQL_RETAIN_GET] = RET_COLS "WHERE topic = ?",
		[SQL_RETAIN_RANGE] = RET_COLS "WHERE topic >= ? AND topic < ? AND topic > ? "
		                              "ORDER BY topic LIMIT ?",
		[SQL_RETAIN_ALL] = RET_COLS "WHERE topic > ? ORDER BY topic LIMIT ?",
		[SQL_ACKED_GET] = "SELECT msgid FROM mqtt_acked WHERE clientid = ? AND topic = ?",
		[SQL_ACKED_UPSERT] =
			"INSERT INTO mqtt_acked (clientid, topic, mid, msgid, created) "
			"VALUES (?, ?, (SELECT id FROM mqtt_msg WHERE msgid = ? LIMIT 1), ?, ?) "
			"ON DUPLICATE KEY UPDATE mid = IF(" NEWER ", VALUES(mid), mid), "
			"created = IF(" NEWER ", VALUES(created), created), "
			"msgid = IF(" NEWER ", VALUES(msgid), msgid)",
		[SQL_ACKED_DELETE] = "DELETE FROM mqtt_acked WHERE clientid = ? AND topic = ?",
	},
	.argmap = {
		[SQL_ACKED_UPSERT] = "01223", /* clientid, topic, msgid, msgid, created */
	},
};
