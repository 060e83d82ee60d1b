-- keepmq: the SQLite backend's tables (the spec's MySQL tables in SQLite's
-- types). keepmq creates them when it opens a new database file; this copy is
-- for operators who prepare the file themselves:  sqlite3 keepmq.db < sqlite.sql
--
-- Payloads are BLOBs (binary-safe). Times are UTC text 'YYYY-MM-DD HH:MM:SS'.
-- msgid is keepmq's 128-bit message id as 32 hex digits: it sorts in publish
-- order, and read positions (mqtt_acked.msgid) compare against it.

-- Connection state: state '1' online, '0' offline.
CREATE TABLE IF NOT EXISTS mqtt_client (
  id INTEGER PRIMARY KEY,
  clientid TEXT UNIQUE,
  state TEXT,
  node TEXT,
  online_at TEXT,
  offline_at TEXT,
  created TEXT DEFAULT CURRENT_TIMESTAMP
);

-- Subscriptions the broker gives a client when it connects
-- (on_subscribe_lookup). Provisioned by the operator; keepmq only reads it.
CREATE TABLE IF NOT EXISTS mqtt_sub (
  id INTEGER PRIMARY KEY,
  clientid TEXT,
  topic TEXT,
  qos INTEGER,
  created TEXT DEFAULT CURRENT_TIMESTAMP,
  UNIQUE (clientid, topic)
);
CREATE INDEX IF NOT EXISTS mqtt_sub_idx ON mqtt_sub (clientid, topic, qos);

-- Stored messages (on_message_publish, on_message_store).
CREATE TABLE IF NOT EXISTS mqtt_msg (
  id INTEGER PRIMARY KEY,
  msgid TEXT,
  topic TEXT NOT NULL,
  sender TEXT,
  node TEXT,
  qos INTEGER NOT NULL DEFAULT 0,
  retain INTEGER,
  payload BLOB,
  arrived TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS mqtt_msg_topic_idx ON mqtt_msg (topic, msgid);
CREATE INDEX IF NOT EXISTS mqtt_msg_msgid_idx ON mqtt_msg (msgid);
CREATE INDEX IF NOT EXISTS mqtt_msg_sender_idx ON mqtt_msg (sender);

-- Retained messages, one row per topic.
CREATE TABLE IF NOT EXISTS mqtt_retain (
  id INTEGER PRIMARY KEY,
  topic TEXT UNIQUE,
  msgid TEXT,
  sender TEXT,
  node TEXT,
  qos INTEGER,
  payload BLOB,
  arrived TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- Read positions: the last message a client acknowledged under one of its
-- subscription filters (topic = the filter). msgid is the position; mid is
-- the mqtt_msg row id of that message, as in the spec's table.
CREATE TABLE IF NOT EXISTS mqtt_acked (
  id INTEGER PRIMARY KEY,
  clientid TEXT,
  topic TEXT,
  mid INTEGER,
  msgid TEXT,
  created TEXT,
  UNIQUE (clientid, topic)
);
