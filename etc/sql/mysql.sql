-- keepmq: the MySQL / MariaDB backend's tables - the spec's, with these
-- changes, each of which keeps the spec's example queries working:
--   * client ids and topics are utf8mb4 with binary collation (utf8mb4_bin):
--     MQTT names are case-sensitive, and keepmq narrows wildcard lookups to
--     a byte range of topics;
--   * payloads are LONGBLOB (the spec's BLOB stops at 64 KB);
--   * mqtt_msg.id is BIGINT, and mqtt_msg has a UNIQUE key on msgid (a
--     batch retried after a lost COMMIT answer never stores a message twice)
--     and an index for fetching by topic;
--   * mqtt_acked has a msgid column: the read position (the message id of
--     the last acknowledged message), next to the spec's mid.
-- keepmq creates them when they do not exist (pool key create_tables); to do
-- it yourself:  mysql -u root -p mqtt < etc/sql/mysql.sql
-- Times are UTC (keepmq sets its sessions' time_zone to '+00:00').
-- (keepmq runs this file statement by statement: keep ';' at the end of a
-- line only where a statement ends.)

CREATE TABLE IF NOT EXISTS `mqtt_client` (
  `id` int(11) unsigned NOT NULL AUTO_INCREMENT,
  `clientid` varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL,
  `state` varchar(3) DEFAULT NULL,
  `node` varchar(100) DEFAULT NULL,
  `online_at` datetime DEFAULT NULL,
  `offline_at` datetime DEFAULT NULL,
  `created` timestamp NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (`id`),
  UNIQUE KEY `mqtt_client_key` (`clientid`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Subscriptions the broker gives a client when it connects
-- (on_subscribe_lookup). Provisioned by the operator; keepmq only reads it.
CREATE TABLE IF NOT EXISTS `mqtt_sub` (
  `id` int(11) unsigned NOT NULL AUTO_INCREMENT,
  `clientid` varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL,
  `topic` varchar(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL,
  `qos` int(3) DEFAULT NULL,
  `created` timestamp NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (`id`),
  UNIQUE KEY `mqtt_sub_key` (`clientid`,`topic`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `mqtt_msg` (
  `id` bigint(20) unsigned NOT NULL AUTO_INCREMENT,
  `msgid` varchar(64) CHARACTER SET ascii COLLATE ascii_bin DEFAULT NULL,
  `topic` varchar(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
  `sender` varchar(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL,
  `node` varchar(100) DEFAULT NULL,
  `qos` int(11) NOT NULL DEFAULT '0',
  `retain` tinyint(2) DEFAULT NULL,
  `payload` longblob,
  `arrived` datetime NOT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `mqtt_msg_msgid` (`msgid`),
  KEY `mqtt_msg_topic` (`topic`(255),`msgid`),
  KEY `mqtt_msg_sender` (`sender`(255))
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE IF NOT EXISTS `mqtt_retain` (
  `id` int(11) unsigned NOT NULL AUTO_INCREMENT,
  `topic` varchar(768) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL,
  `msgid` varchar(64) CHARACTER SET ascii COLLATE ascii_bin DEFAULT NULL,
  `sender` varchar(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL,
  `node` varchar(100) DEFAULT NULL,
  `qos` int(2) DEFAULT NULL,
  `payload` longblob,
  `arrived` timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (`id`),
  UNIQUE KEY `mqtt_retain_key` (`topic`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- Read positions: the last message a client acknowledged under one of its
-- subscription filters (topic = the filter).
CREATE TABLE IF NOT EXISTS `mqtt_acked` (
  `id` int(11) unsigned NOT NULL AUTO_INCREMENT,
  `clientid` varchar(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL,
  `topic` varchar(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin DEFAULT NULL,
  `mid` bigint(20) unsigned DEFAULT NULL,
  `msgid` varchar(64) CHARACTER SET ascii COLLATE ascii_bin DEFAULT NULL,
  `created` timestamp NULL DEFAULT NULL,
  PRIMARY KEY (`id`),
  UNIQUE KEY `mqtt_acked_key` (`clientid`,`topic`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
