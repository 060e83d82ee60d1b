/*
 * config_broker.c - the broker's configuration keys.
 *
 * One table per section; each row is the single source of truth for a key's
 * type, default, bounds and documentation (docs/configuration.md is generated
 * from these rows by `keepmq --config-doc`). Names follow EMQ X 4 where it had
 * an equivalent key (node.name, listener.tcp.<name>, mqtt.max_packet_size,
 * allow_anonymous, acl_file) and mosquitto where it did not (password_file).
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "util/log.h"

#define OFF(f) offsetof(broker_config, f)
#define KB 1024ll
#define MB (1024ll * 1024ll)
#define SEC 1000ll
#define HOUR (3600ll * 1000ll)

static const char *const log_levels[] = {"error", "warning", "notice", "info", "debug", NULL};
static const char *const drop_policies[] = {"drop_oldest", "drop_newest", NULL};
static const char *const shared_strategies[] = {"round_robin", "random", "hash_clientid",
                                                "hash_topic", NULL};

static const cfg_key node_keys[] = {
	{"node.name", CFG_STRING, "keepmq@127.0.0.1", 0, 0, NULL, OFF(node_name), NULL, 0,
	 "This broker's node name. It appears in `$SYS/brokers/<node>/...` topics and is the "
	 "`${node}` value of persistence rules (the original broker's `emqx@127.0.0.1`)."},
	{"node.io_workers", CFG_INT, "0", 0, KEEPMQ_MAX_WORKERS, NULL, OFF(io_workers), NULL, 0,
	 "Number of I/O worker threads, each with its own event loop and listening socket "
	 "(SO_REUSEPORT). 0 means one per CPU core."},
};

static const cfg_key log_keys[] = {
	{"log.level", CFG_ENUM, "info", 0, 0, log_levels, OFF(log_level), NULL, 0,
	 "Least severe level written. `debug` logs every connection and protocol error."},
	{"log.file", CFG_PATH, "", 0, 0, NULL, OFF(log_file), NULL, 0,
	 "Append log lines to this file instead of standard error. Empty: standard error."},
};

static listener_cfg *listener_get(broker_config *cfg, const char *name, const cfg_value *v,
                                  char *err, size_t errlen)
{
	for (listener_cfg *l = cfg->listeners; l; l = l->next)
		if (strcmp(l->name, name) == 0)
			return l;
	if (strlen(name) >= sizeof(((listener_cfg *)0)->name)) {
		snprintf(err, errlen, "listener name is longer than 63 characters");
		return NULL;
	}
	unsigned n = 0;
	for (listener_cfg *l = cfg->listeners; l; l = l->next)
		n++;
	if (n >= 255) {
		snprintf(err, errlen, "too many listeners (at most 255)");
		return NULL;
	}
	listener_cfg *l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(l->name, sizeof(l->name), "%s", name);
	if (v && v->file)
		snprintf(l->where, sizeof(l->where), "%s:%d", v->file, v->line);
	l->max_connections = 1024000;
	l->backlog = 1024;
	/* append: listener order is configuration order */
	listener_cfg **pp = &cfg->listeners;
	while (*pp)
		pp = &(*pp)->next;
	*pp = l;
	return l;
}

static int set_listener_addr(void *target, const char *const *cap, int ncap, const cfg_value *v,
                             char *err, size_t errlen)
{
	listener_cfg *l = listener_get(target, cap[0], v, err, errlen);
	if (!l)
		return -1;
	l->addr = v->v.addr;
	l->addr.set = true;
	return 0;
}

static int set_listener_maxconn(void *target, const char *const *cap, int ncap,
                                const cfg_value *v, char *err, size_t errlen)
{
	listener_cfg *l = listener_get(target, cap[0], v, err, errlen);
	if (!l)
		return -1;
	l->max_connections = v->v.i;
	return 0;
}

static int set_listener_backlog(void *target, const char *const *cap, int ncap, const cfg_value *v,
                                char *err, size_t errlen)
{
	listener_cfg *l = listener_get(target, cap[0], v, err, errlen);
	if (!l)
		return -1;
	l->backlog = v->v.i;
	return 0;
}

static const cfg_key listener_keys[] = {
	{"listener.tcp.<name>", CFG_ADDR, NULL, 0, 0, NULL, 0, set_listener_addr, 0,
	 "Opens a plain TCP MQTT listener named `<name>` on `host:port` (`0.0.0.0:1883`, "
	 "`127.0.0.1:1883`, `[::]:1883`, or just a port). Several listeners may be defined. "
	 "Without any, keepmq listens on `0.0.0.0:1883`."},
	{"listener.tcp.<name>.max_connections", CFG_INT, "1024000", 1, 100000000, NULL, 0,
	 set_listener_maxconn, 0,
	 "Most simultaneous connections on this listener; further connections are accepted and "
	 "closed at once (counted as refused)."},
	{"listener.tcp.<name>.backlog", CFG_INT, "1024", 1, 65535, NULL, 0, set_listener_backlog, 0,
	 "Length of the kernel's queue of connections not yet accepted."},
};

static const cfg_key mqtt_keys[] = {
	{"mqtt.max_packet_size", CFG_SIZE, "1MB", 64, 268435460ll, NULL, OFF(max_packet_size), NULL,
	 0,
	 "Largest MQTT packet accepted from a client, fixed header included. Larger packets close "
	 "the connection (MQTT 5: DISCONNECT 0x95). Advertised to MQTT 5 clients in CONNACK."},
	{"mqtt.max_clientid_len", CFG_INT, "65535", 23, 65535, NULL, OFF(max_clientid_len), NULL, 0,
	 "Longest client identifier accepted, in bytes (CONNACK 0x85 / identifier rejected)."},
	{"mqtt.max_topic_levels", CFG_INT, "128", 1, 65535, NULL, OFF(max_topic_levels), NULL, 0,
	 "Most levels (`/`-separated parts) in a topic name or filter."},
	{"mqtt.max_qos_allowed", CFG_INT, "2", 0, 2, NULL, OFF(max_qos_allowed), NULL, 0,
	 "Highest QoS the broker accepts and grants. MQTT 5 clients are told in CONNACK; "
	 "subscriptions are granted at most this QoS."},
	{"mqtt.max_topic_alias", CFG_INT, "64", 0, 65535, NULL, OFF(max_topic_alias), NULL, 0,
	 "Topic Alias Maximum offered to MQTT 5 clients (aliases they may use when publishing). "
	 "0 disables client-to-server aliases."},
	{"mqtt.retain_available", CFG_BOOL, "true", 0, 0, NULL, OFF(retain_available), NULL, 0,
	 "Whether retained messages are supported. When off, a retained PUBLISH is refused "
	 "(MQTT 5: 0x9A)."},
	{"mqtt.wildcard_subscription", CFG_BOOL, "true", 0, 0, NULL, OFF(wildcard_subscription),
	 NULL, 0, "Whether filters with `+` and `#` may be subscribed to."},
	{"mqtt.shared_subscription", CFG_BOOL, "true", 0, 0, NULL, OFF(shared_subscription), NULL,
	 0, "Whether `$share/<group>/<filter>` and `$queue/<filter>` subscriptions are supported."},
	{"mqtt.subscription_identifiers", CFG_BOOL, "true", 0, 0, NULL,
	 OFF(subscription_identifiers), NULL, 0, "Whether MQTT 5 subscription identifiers are supported."},
	{"mqtt.allow_zero_length_clientid", CFG_BOOL, "true", 0, 0, NULL,
	 OFF(allow_zero_length_clientid), NULL, 0,
	 "Whether a client may connect with an empty client id and be assigned one (MQTT 5 "
	 "always, MQTT 3.1.1 only with clean session)."},
	{"mqtt.server_keepalive", CFG_DURATION, "0", 0, 65535 * SEC, NULL, OFF(server_keepalive_ms),
	 NULL, 0,
	 "If non-zero, MQTT 5 clients are told to use this keep-alive instead of their own "
	 "(Server Keep Alive in CONNACK). 0: the client's value is used."},
	{"mqtt.idle_timeout", CFG_DURATION, "15s", 100, HOUR, NULL, OFF(idle_timeout_ms), NULL, 0,
	 "How long a new TCP connection may take to be accepted as an MQTT client - to send a "
	 "complete CONNECT and, with a password file, to have its password checked - before it is "
	 "closed. Protects against half-open and idle sockets and a flooded password check."},
	{"mqtt.max_subscriptions", CFG_INT, "10000", 1, 100000000, NULL, OFF(max_subscriptions),
	 NULL, CFG_F_INFINITY,
	 "Most subscriptions one client may hold. Further SUBSCRIBE entries are refused "
	 "(MQTT 5: 0x97 quota exceeded; MQTT 3: 0x80)."},
	{"mqtt.max_inflight", CFG_INT, "32", 1, 65535, NULL, OFF(max_inflight), NULL, 0,
	 "Most QoS 1 and 2 messages sent to a client and not yet acknowledged (a smaller MQTT 5 "
	 "Receive Maximum from the client wins). Also the Receive Maximum advertised to MQTT 5 "
	 "clients (mqtt.max_awaiting_rel if that is smaller). Further messages wait in the "
	 "session queue."},
	{"mqtt.max_awaiting_rel", CFG_INT, "100", 1, 65535, NULL, OFF(max_awaiting_rel), NULL, 0,
	 "Most incoming QoS 2 messages a client may have awaiting PUBREL (MQTT 5 clients are held "
	 "to the smaller of this and mqtt.max_inflight, which CONNACK advertises as their Receive "
	 "Maximum)."},
	{"mqtt.await_rel_timeout", CFG_DURATION, "300s", SEC, 24 * HOUR, NULL,
	 OFF(await_rel_timeout_ms), NULL, 0,
	 "An incoming QoS 2 packet id with no PUBREL after this long is forgotten when room is "
	 "needed."},
	{"mqtt.max_mqueue_len", CFG_INT, "1000", 1, 10000000, NULL, OFF(max_mqueue_len), NULL, 0,
	 "Most messages queued for one session (offline, or online with a full in-flight "
	 "window). When full, mqtt.mqueue_drop decides which message is dropped; drops are "
	 "counted in `$SYS/.../messages/dropped`."},
	{"mqtt.mqueue_drop", CFG_ENUM, "drop_oldest", 0, 0, drop_policies, OFF(mqueue_drop), NULL,
	 0, "Which message a full session queue drops: the oldest queued or the new one."},
	{"mqtt.mqueue_store_qos0", CFG_BOOL, "true", 0, 0, NULL, OFF(mqueue_store_qos0), NULL, 0,
	 "Whether QoS 0 messages are queued for offline persistent sessions."},
	{"mqtt.session_expiry_interval", CFG_DURATION, "2h", 0, 0xFFFFFFFFll * SEC, NULL,
	 OFF(session_expiry_ms), NULL, CFG_F_INFINITY,
	 "How long an MQTT 3 persistent session (clean session 0) is kept after its client "
	 "disconnects, and the longest Session Expiry Interval an MQTT 5 client may ask for "
	 "(larger requests are lowered and the client told in CONNACK). `infinity`: never expire."},
	{"mqtt.max_pending_bytes", CFG_SIZE, "8MB", 64 * KB, 1024 * MB, NULL,
	 OFF(max_pending_bytes), NULL, 0,
	 "Bytes that may wait in a connection's send buffer for a slow reader. Above this, QoS 0 "
	 "messages to it are dropped (counted) and QoS 1/2 messages wait in the session queue, so "
	 "one slow client never grows the broker's memory without bound."},
	{"mqtt.max_retained_messages", CFG_INT, "1000000", 1, 1000000000ll, NULL,
	 OFF(max_retained_messages), NULL, CFG_F_INFINITY,
	 "Most retained messages stored; a new retained topic beyond this is not stored "
	 "(updates of existing topics still are)."},
	{"mqtt.shared_subscription_strategy", CFG_ENUM, "round_robin", 0, 0, shared_strategies,
	 OFF(shared_strategy), NULL, 0,
	 "How a shared subscription group picks the member that receives a message. Members "
	 "whose client is online are always preferred."},
	{"mqtt.response_information", CFG_STRING, "", 0, 0, NULL, OFF(response_information), NULL,
	 0,
	 "Response Information returned to MQTT 5 clients that ask for it (Request Response "
	 "Information = 1), e.g. `responses/`. Empty: none is returned."},
};

static const cfg_key broker_keys[] = {
	{"broker.sys_interval", CFG_DURATION, "10s", 0, 24 * HOUR, NULL, OFF(sys_interval_ms), NULL,
	 0,
	 "How often statistics are published as retained messages under "
	 "`$SYS/brokers/<node>/`. 0 disables them."},
};

static const cfg_key auth_keys[] = {
	{"allow_anonymous", CFG_BOOL, "true", 0, 0, NULL, OFF(allow_anonymous), NULL, 0,
	 "Whether clients without a user name may connect."},
	{"password_file", CFG_PATH, "", 0, 0, NULL, OFF(password_file), NULL, 0,
	 "File of `user:hash` lines (PBKDF2-SHA512, made with `keepmq passwd`). When set, a "
	 "client that gives a user name must give its password. Empty: no password checks."},
	{"acl_file", CFG_PATH, "", 0, 0, NULL, OFF(acl_file), NULL, 0,
	 "Access control list in the mosquitto format (`user`, `topic`, `pattern` lines with "
	 "`%c`/`%u`). When set, anything not allowed by it is denied. Empty: no ACL."},
};

int broker_config_register(cfg_registry *r, broker_config *cfg)
{
#define REG(sec, intro, keys) cfg_register(r, sec, intro, keys, sizeof(keys) / sizeof(keys[0]), cfg)
	if (REG("Node", "Identity and threads of this broker.", node_keys) ||
	    REG("Listeners", "Where clients connect.", listener_keys) ||
	    REG("Logging", "Where log lines go.", log_keys) ||
	    REG("MQTT", "Protocol features and the limits that protect the broker from clients.",
	        mqtt_keys) ||
	    REG("Broker", "Broker-generated topics.", broker_keys) ||
	    REG("Authentication and authorisation", "Who may connect, publish and subscribe.",
	        auth_keys))
		return -1;
#undef REG
	return 0;
}

int broker_config_default_listener(broker_config *cfg)
{
	char err[128];
	listener_cfg *l = listener_get(cfg, "default", NULL, err, sizeof(err));
	if (!l)
		return -1;
	cfg_parse_addr("0.0.0.0:1883", &l->addr);
	l->addr.set = true;
	return 0;
}

void broker_config_free(broker_config *cfg)
{
	listener_cfg *l = cfg->listeners;
	while (l) {
		listener_cfg *n = l->next;
		free(l);
		l = n;
	}
	cfg->listeners = NULL;
}
