-- keepmq: the PostgreSQL backend's tables - the spec's, with these changes,
-- each of which keeps the spec's example queries working:
--   * payloads are bytea (binary-safe; the spec's text cannot hold every
--     payload - or set the pool key payload_encoding = base64 to keep text);
--   * client ids, topics and senders are text without a length limit, and
--     topics are COLLATE "C" (byte order: keepmq narrows wildcard lookups to
--     a byte range of topics, which a locale's collation would not keep);
--   * mqtt_msg and mqtt_retain have the node column the spec's example
--     output shows; mqtt_msg.id is BIGSERIAL, msgid is UNIQUE (a batch
--     retried after a lost COMMIT answer never stores a message twice), and
--     there is an index for fetching by topic;
--   * mqtt_acked has a msgid column: the read position (the message id of
--     the last acknowledged message), next to the spec's mid;
--   * created columns default to the time of the insert (UTC).
-- keepmq creates them when they do not exist (pool key create_tables); to do
-- it yourself:  psql -d mqtt -f etc/sql/pgsql.sql
-- Times are UTC (timestamp without time zone).

CREATE TABLE IF NOT EXISTS mqtt_client (
  id SERIAL PRIMARY KEY,
  clientid text,
  state integer,
  node character varying(100),
  online_at timestamp,
  offline_at timestamp,
  created timestamp without time zone DEFAULT (now() AT TIME ZONE 'utc'),
  UNIQUE (clientid)
);

-- Subscriptions the broker gives a client when it connects
-- (on_subscribe_lookup). Provisioned by the operator; keepmq only reads it.
CREATE TABLE IF NOT EXISTS mqtt_sub (
  id SERIAL PRIMARY KEY,
  clientid text,
  topic text,
  qos integer,
  created timestamp without time zone DEFAULT (now() AT TIME ZONE 'utc'),
  UNIQUE (clientid, topic)
);

CREATE TABLE IF NOT EXISTS mqtt_msg (
  id BIGSERIAL PRIMARY KEY,
  msgid character varying(64) UNIQUE,
  sender text,
  topic text COLLATE "C" NOT NULL,
  node character varying(100),
  qos integer NOT NULL DEFAULT 0,
  retain integer,
  payload bytea,
  arrived timestamp without time zone NOT NULL
);
CREATE INDEX IF NOT EXISTS mqtt_msg_topic_idx ON mqtt_msg (topic, msgid);
CREATE INDEX IF NOT EXISTS mqtt_msg_sender_idx ON mqtt_msg (sender);

CREATE TABLE IF NOT EXISTS mqtt_retain (
  id SERIAL PRIMARY KEY,
  topic text COLLATE "C",
  msgid character varying(64),
  sender text,
  node character varying(100),
  qos integer,
  payload bytea,
  arrived timestamp without time zone DEFAULT (now() AT TIME ZONE 'utc'),
  UNIQUE (topic)
);

-- Read positions: the last message a client acknowledged under one of its
-- subscription filters (topic = the filter).
CREATE TABLE IF NOT EXISTS mqtt_acked (
  id SERIAL PRIMARY KEY,
  clientid text,
  topic text,
  mid bigint,
  msgid character varying(64),
  created timestamp without time zone,
  UNIQUE (clientid, topic)
);
