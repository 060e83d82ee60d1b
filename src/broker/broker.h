/*
 * broker.h - the broker core: configuration, I/O workers, connections and
 * sessions, and the functions the per-packet files share.
 *
 * Design (the long version is docs/ARCHITECTURE.md)
 * ------
 * - N I/O workers, each a thread with its own libuv loop and its own
 *   SO_REUSEPORT listening socket per listener. The kernel spreads accepted
 *   connections over the workers.
 * - Every client id has an owner worker, hash(client id) % N. Sessions live on
 *   their owner and only that thread ever touches them: no session lock
 *   exists. A connection accepted elsewhere is handed over to the owner right
 *   after its CONNECT is read (the socket and any bytes already read move
 *   through the owner's inbox), so session takeover, persistent sessions and
 *   wills are all local to one thread.
 * - Each worker indexes its own sessions' subscriptions in its own router. A
 *   PUBLISH is matched locally and forwarded (one inbox item per message) to
 *   every other worker that has subscriptions; each matches and delivers to
 *   its own sessions in parallel. Shared subscriptions and retained messages
 *   are global structures under rwlocks (shared.h, retain.h).
 * - Inbox items produced while handling a loop iteration are batched per
 *   destination and pushed once, in the iteration's check phase, together
 *   with the flush of every connection that has pending output: one write(2)
 *   per connection per iteration however many packets it received.
 * - A worker never blocks: password hashing runs on libuv's thread pool,
 *   sockets are non-blocking, locks are held only for in-memory work.
 *
 * Ownership
 * ---------
 * broker owns workers, config, retained store and shared registry. A worker
 * owns its connections and sessions. A connection is freed only in its libuv
 * close callback (never inside its own read/write callback) and only when no
 * thread-pool request refers to it (conn.refs). Deliveries own one reference
 * to their message.
 */
#ifndef KEEPMQ_BROKER_H
#define KEEPMQ_BROKER_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "auth/auth.h"
#include "broker/message.h"
#include "broker/retain.h"
#include "broker/router.h"
#include "broker/shared.h"
#include "config/config.h"
#include "mqtt/mqtt.h"
#include "persist/persist.h"
#include "persist/state.h"
#include "util/buf.h"
#include "util/hashmap.h"

#define KEEPMQ_MAX_WORKERS 64

struct broker;
struct worker;
struct conn;
struct session;

/* ---------------------------------------------------------------- configuration */

typedef struct listener_cfg {
	struct listener_cfg *next;
	char name[64];
	char where[192]; /* "file:line" of its first key, for later errors */
	cfg_addr addr;
	int64_t max_connections;
	int64_t backlog;
} listener_cfg;

enum mqueue_drop_policy { MQUEUE_DROP_OLDEST = 0, MQUEUE_DROP_NEWEST = 1 };

typedef struct broker_config {
	/* node */
	char *node_name;
	int64_t io_workers;
	/* listeners (built by the listener.tcp.<name>* rows) */
	listener_cfg *listeners;
	/* logging */
	int log_level;
	char *log_file;
	/* MQTT limits and features */
	uint64_t max_packet_size;
	int64_t max_clientid_len;
	int64_t max_topic_levels;
	int64_t max_qos_allowed;
	int64_t max_topic_alias;
	bool retain_available;
	bool wildcard_subscription;
	bool shared_subscription;
	bool subscription_identifiers;
	bool allow_zero_length_clientid;
	uint64_t server_keepalive_ms;
	uint64_t idle_timeout_ms;
	int64_t max_subscriptions;
	int64_t max_inflight;
	int64_t max_awaiting_rel;
	uint64_t await_rel_timeout_ms;
	int64_t max_mqueue_len;
	int mqueue_drop;
	bool mqueue_store_qos0;
	uint64_t session_expiry_ms;
	uint64_t max_pending_bytes;
	int64_t max_retained_messages;
	int shared_strategy;
	char *response_information;
	uint64_t sys_interval_ms;
	/* auth */
	bool allow_anonymous;
	char *password_file;
	char *acl_file;
} broker_config;

/* Registers the broker's keys (node.*, listener.*, log.*, mqtt.*, broker.*, auth). */
int broker_config_register(cfg_registry *r, broker_config *cfg);
/* Adds the listener used when none is configured: "default" on 0.0.0.0:1883. */
int broker_config_default_listener(broker_config *cfg);
/* Frees what the rows with callbacks built (listeners). cfg_release frees strings. */
void broker_config_free(broker_config *cfg);

/* ---------------------------------------------------------------- statistics */

/*
 * Counters of one worker. Only the owning worker writes them (STAT_ADD is a
 * relaxed load+store, no lock prefix); any thread may read them relaxed.
 */
typedef struct worker_stats {
	_Atomic uint64_t bytes_in, bytes_out;
	_Atomic uint64_t pkts_in, pkts_out;
	_Atomic uint64_t msgs_in, msgs_out;            /* PUBLISH received / sent */
	_Atomic uint64_t msgs_in_qos[3], msgs_out_qos[3];
	_Atomic uint64_t msgs_dropped;                 /* all drops */
	_Atomic uint64_t dropped_queue_full, dropped_expired, dropped_slow_reader,
		dropped_no_session, dropped_too_large, dropped_denied, dropped_no_subscribers;
	_Atomic uint64_t conn_accepted, conn_refused, conn_closed;
	_Atomic uint64_t connects, connack_refused;
	_Atomic uint64_t malformed, protocol_errors, keepalive_timeouts, idle_timeouts;
	_Atomic uint64_t auth_failures, acl_denied;
	_Atomic uint64_t takeovers, handoffs;
	/* gauges (also written by the owner only) */
	_Atomic int64_t connections;
	_Atomic int64_t sessions;
	_Atomic int64_t sessions_persistent;
	_Atomic int64_t subscriptions;
} worker_stats;

#define STAT_ADD(w, field, n)                                                                      \
	atomic_store_explicit(&(w)->st.field,                                                      \
	                      atomic_load_explicit(&(w)->st.field, memory_order_relaxed) + (n),   \
	                      memory_order_relaxed)
#define STAT_INC(w, field) STAT_ADD(w, field, 1)
#define STAT_GET(w, field) atomic_load_explicit(&(w)->st.field, memory_order_relaxed)

/* ---------------------------------------------------------------- inbox */

enum inbox_kind {
	INBOX_FANOUT = 1,   /* match msg against the local router and deliver */
	INBOX_TARGETED = 2, /* deliver msg to session `cid` (shared subscription) */
	INBOX_HANDOFF = 3,  /* adopt a connection whose client id we own */
	INBOX_SHUTDOWN = 4, /* drain and stop */
	INBOX_CALL = 5,     /* run fn(worker, arg) on the worker's thread; an item
	                     * discarded unrun (shutdown) gets fn(NULL, arg) to free arg */
};

typedef union peer_addr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
} peer_addr;

typedef struct handoff {
	int fd;
	uint8_t listener;
	peer_addr peer;
	uint32_t len;
	uint8_t data[]; /* the CONNECT packet and every byte read after it */
} handoff;

typedef struct inbox_item {
	struct inbox_item *next;
	uint8_t kind;
	uint8_t options; /* TARGETED: subscription options */
	uint32_t sub_id; /* TARGETED */
	kmq_msg *msg;    /* FANOUT, TARGETED: one reference */
	state_tok *tok;  /* FANOUT, TARGETED: one hold of the publisher's sync token, or NULL */
	handoff *ho;     /* HANDOFF: owned */
	void (*fn)(struct worker *w, void *arg);
	void *arg;
	uint32_t cid_len;
	char cid[]; /* TARGETED */
} inbox_item;

/* ---------------------------------------------------------------- deliveries */

enum delivery_flags {
	DLV_RETAIN = 1u << 0, /* send with the retain flag set */
	DLV_DUP = 1u << 1,    /* already sent once: DUP on resend */
	DLV_PUBREL = 1u << 2, /* QoS 2: PUBREC received, PUBREL sent, awaiting PUBCOMP */
	DLV_SENT = 1u << 3,   /* written on the current connection */
};

/* One message on its way to one session. */
typedef struct delivery {
	kmq_msg *msg;
	uint64_t sseq;      /* its row in the state store (store.c), 0 if none */
	uint32_t *more_ids; /* further subscription ids (rare; malloc'd) */
	uint32_t sub_id;    /* first subscription id, 0 if none */
	uint16_t n_more;
	uint16_t pid;
	uint8_t qos;
	uint8_t flags;
} delivery;

/* Ring buffer of deliveries. */
typedef struct dq {
	delivery *v;
	uint32_t head, n, cap; /* cap: power of two or 0 */
} dq;

/* The i-th delivery of a ring, oldest first (i < q->n). */
static inline delivery *dq_at(dq *q, uint32_t i) { return &q->v[(q->head + i) & (q->cap - 1)]; }

/* ---------------------------------------------------------------- sessions */

/* Internal subscription option bit (the wire reserves bits 6-7). */
#define SUBOPT_ACL_CHECK 0x80 /* ACL allows only part of the filter: check each message */

typedef struct session_sub {
	shared_member *shared; /* non-NULL for $share/$queue subscriptions */
	uint8_t *fetched;      /* highest message id delivered by a fetch (16 bytes), or NULL */
	uint32_t sub_id;
	uint8_t options;
	uint16_t filter_off; /* start of the real filter within `full` (after $share/g/) */
	uint16_t len;
	char full[]; /* the filter as the client sent it */
} session_sub;

/* A PUBACK/PUBREC waiting for sync-mode writes (hooks.c). */
typedef struct ack_wait {
	uint64_t seq;
	uint32_t pending; /* jobs not yet committed */
	uint16_t pid;
	uint8_t type; /* MQTT_PUBACK or MQTT_PUBREC */
	bool ok;
} ack_wait;

typedef struct rel_wait {
	uint16_t pid;
	uint64_t at_ms;
} rel_wait;

typedef struct session {
	struct worker *w;
	struct conn *c; /* NULL while offline */
	char *username; /* malloc'd, NUL-terminated, or NULL */
	uint32_t ulen;
	uint8_t version;
	bool clean_start;
	bool persistent; /* survives disconnect (expiry > 0) */
	bool stored;     /* written to the state store (store.c) */
	uint32_t expiry_s;   /* session expiry interval; UINT32_MAX: never */
	hashmap subs; /* full filter -> session_sub */
	dq queue;     /* waiting to be sent */
	dq inflight;  /* sent, unacknowledged, in send order */
	uint16_t window;
	uint16_t next_pid;
	rel_wait *awaiting; /* incoming QoS 2 ids awaiting PUBREL */
	uint16_t n_awaiting, cap_awaiting;
	kmq_msg *will;
	uint32_t will_delay_s;
	uv_timer_t *timer; /* will delay and expiry; allocated on demand */
	uint64_t will_due_ms;   /* loop time the delayed will is due; 0: none */
	uint64_t expiry_due_ms; /* loop time the offline session expires; 0: never/online */
	uint32_t match_epoch, match_idx;
	uint64_t serial;   /* unique per worker: answers for an ended session are dropped */
	ack_wait *ackq;    /* sync-mode acknowledgements, in PUBLISH order */
	uint32_t ackq_n, ackq_cap;
	uint64_t ack_seq;
	uint64_t store_seq;    /* last state-store sequence number of a delivery */
	uint32_t fetching;     /* on_message_fetch lookups running: live messages wait */
	uint64_t fetch_due_ms; /* loop time after which they stop waiting */
	uint32_t cid_len;
	char client_id[]; /* NUL-terminated */
} session;

/* ---------------------------------------------------------------- connections */

enum conn_state {
	CONN_NEW = 0,    /* waiting for CONNECT */
	CONN_AUTH,       /* CONNECT read, password check on the thread pool */
	CONN_ACTIVE,     /* CONNACK sent */
	CONN_CLOSING,    /* flushing, then closing */
	CONN_CLOSED,     /* uv_close called */
};

enum conn_flags {
	CF_DIRTY = 1u << 0,        /* on the worker's dirty list */
	CF_WANT_WRITE = 1u << 1,   /* the kernel's send buffer was full: polling for writable */
	CF_PROBLEM_INFO = 1u << 2, /* v5 Request Problem Information (default 1) */
	CF_HANDED_OFF = 1u << 3,   /* socket moved to another worker: do not close it */
	CF_READING = 1u << 4,      /* polling for readable */
	CF_OUT_IDLE = 1u << 5,     /* no output since the last tick: the buffer may go */
	CF_CLOSE_DONE = 1u << 6,   /* libuv's close callback has run */
	CF_ACKQ_FULL = 1u << 7,    /* too many sync acknowledgements pending: not reading */
};

typedef struct conn {
	uv_poll_t poll; /* readiness of fd; the socket I/O is ours (conn.c) */
	int fd;
	struct worker *w;
	session *s;
	struct conn *next, *prev; /* worker's connection list */
	struct conn *dirty_next;
	buf in;  /* bytes of an incomplete packet */
	buf out; /* encoded packets; [out_off, out.len) not yet sent */
	uint32_t out_off;
	uint64_t last_rx_ms; /* loop time of the last received packet */
	uint64_t since_ms;   /* accepted at (before CONNACK), closing since (after) */
	uint32_t keepalive_ms;   /* 0: no keep-alive */
	uint32_t max_packet_out; /* client's Maximum Packet Size; 0: protocol maximum */
	uint16_t alias_out_max, alias_out_next;
	uint16_t refs;  /* thread-pool requests in progress */
	uint16_t flags; /* enum conn_flags */
	uint8_t state;
	uint8_t version;
	uint8_t listener;
	uint8_t events; /* what the poll handle is started with */
	uint8_t disconnect_rc; /* reason this connection ended, for will handling */
	bool will_suppress;    /* normal DISCONNECT: no will */
	char **alias_in;       /* [alias] -> topic, allocated on first use */
	hashmap *alias_out;    /* topic -> alias, allocated on first use */
	peer_addr peer;
} conn;

/* ---------------------------------------------------------------- workers */

typedef struct worker {
	struct broker *b;
	unsigned id;
	pthread_t thread;
	uv_loop_t loop;
	uv_async_t async;
	uv_timer_t tick;
	uv_check_t check;
	uv_idle_t idle; /* active while work is pending: keeps poll from blocking */
	struct listener *listeners;
	unsigned nlisteners;
	pthread_mutex_t inbox_mu;
	inbox_item *inbox_head, *inbox_tail;
	inbox_item *ob_head[KEEPMQ_MAX_WORKERS], *ob_tail[KEEPMQ_MAX_WORKERS];
	uint64_t ob_pending; /* bitmask of destinations with a batch */
	hashmap sessions;    /* client id -> session */
	router router;
	_Atomic uint64_t nsubs; /* router entries, read by other workers */
	conn *conns;
	conn *dirty;
	uint8_t *readbuf;
	msgid_gen ids;
	uint32_t match_epoch;
	uint64_t next_serial;
	struct match_scratch *scratch;
	state_tok *route_tok; /* while routing a sync-mode PUBLISH: its token (store.c) */
	bool stopping;
	worker_stats st;
} worker;

/* ---------------------------------------------------------------- broker */

typedef struct broker {
	broker_config *cfg;
	unsigned nworkers;
	worker *workers;
	retain_store retained;
	shared_registry shared;
	passwd_db *passwd;
	acl *acl;
	uint64_t started_ms; /* wall clock */
	_Atomic int64_t listener_conns[256];
	_Atomic bool stopping;
	persist *persist;    /* the persistence framework (owned by main) */
	state *state;        /* the broker state store, or NULL (owned by main) */
	bool restoring;      /* loading the state store: changes are not written back */
	persist_host phost;  /* its callbacks into the broker (hooks.c) */
	uv_loop_t main_loop;
	uv_signal_t sigterm, sigint, sighup;
	uv_timer_t sys_timer;
	uv_timer_t stop_timer;
	_Atomic unsigned workers_done;
	int exit_code;
} broker;

/* broker.c */
/* p (may be NULL) is the configured persistence bus; the caller owns it. */
int broker_init(broker *b, broker_config *cfg, persist *p, state *st);
/* Runs until SIGTERM/SIGINT; returns the process exit code. */
int broker_run(broker *b);
void broker_free(broker *b);
static inline unsigned broker_owner(const broker *b, const void *cid, size_t len);
/* Totals over all workers, for $SYS and tests. */
void broker_stats_total(broker *b, worker_stats *out);

/* worker.c */
int worker_init(worker *w, broker *b, unsigned id);
void worker_free(worker *w);
int worker_start(worker *w);
/* Queues an item for worker `to` (batched until the end of the iteration).
 * Takes ownership of it. Callable only from worker `from`'s thread. */
void worker_post(worker *from, unsigned to, inbox_item *it);
/* Pushes an item from any thread (not batched). Takes ownership. */
void worker_post_external(worker *to, inbox_item *it);
/* Keeps the loop from sleeping until the end of this iteration's work. */
void worker_wake_self(worker *w);
uint64_t worker_now(worker *w); /* loop time, ms (monotonic) */

/* listener.c */
typedef struct listener {
	uv_poll_t poll;
	uv_timer_t retry; /* accept paused after EMFILE/ENFILE */
	int fd;
	uint8_t idx;
	bool open;
} listener;
int listeners_open(worker *w);
void listeners_close(worker *w);

/* conn.c */
#define READBUF_SIZE (64 * 1024)
/* Wraps an accepted (or handed-over) non-blocking socket. */
conn *conn_new(worker *w, int fd, uint8_t listener);
/* Starts reading; for adopted connections `pending` bytes are processed first. */
int conn_start(conn *c, const uint8_t *pending, size_t len);
/* Reserves n bytes at the end of the output buffer; NULL on allocation failure
 * (the connection is then closed). Call conn_commit after writing them. */
uint8_t *conn_reserve(conn *c, size_t n);
void conn_commit(conn *c, size_t n);
/* Encodes and queues a packet. Returns 0, -1 if the connection is closing. */
int conn_send_packet(conn *c, const mqtt_packet *pkt);
/* Writes out pending output now. */
void conn_flush(conn *c);
/* The check phase's flush of a connection taken off the dirty list. */
void conn_flush_dirty(conn *c);
/* Stops reading (while a password check runs). */
void conn_read_stop(conn *c);
/* Ends the connection after pending output is flushed. rc is the v5 reason
 * for will handling and logs; for v5 clients, if send_disconnect is true, a
 * DISCONNECT with that reason is sent first. */
void conn_shutdown(conn *c, uint8_t rc, bool send_disconnect);
/* Drops a reference taken for a thread-pool request. Returns true if the
 * connection is closed (and then possibly freed): the caller stops there. */
bool conn_unref(conn *c);
/* Ends the connection at once (I/O error, EOF). */
void conn_abort(conn *c, uint8_t rc);
/* Protocol violation: counted, logged (rate-limited), closed with a v5
 * DISCONNECT carrying rc (and reason string) or a plain v3 close. */
void conn_protocol_error(conn *c, uint8_t rc, const char *why);
void conn_peer_str(const conn *c, char *out, size_t len);
size_t conn_pending_bytes(const conn *c);
/* Periodic checks: keep-alive, idle timeout, closing deadline, buffer trim. */
void conn_tick(conn *c, uint64_t now_ms);
/* Dispatches one whole packet. Returns 0 to continue reading, -1 to stop
 * processing this connection's input (closed or handed off). */
int conn_handle_packet(conn *c, const uint8_t *p, uint32_t len);
/* Processes buffered input (after auth completes or on adoption). */
void conn_process_input(conn *c);
/* (Re)starts reading from the socket. Returns 0, -1 on failure. */
int conn_read_start(conn *c);
/* While a packet is being handled: the bytes that followed it in the same
 * read (a CONNECT hand-off carries them to the new owner). */
const uint8_t *conn_rx_rest(size_t *len);

/* handle_*.c: one per packet type received. Return 0 or -1 as conn_handle_packet. */
int handle_connect(conn *c, const uint8_t *p, uint32_t len);
int handle_publish(conn *c, const mqtt_packet *pkt);
int handle_puback(conn *c, const mqtt_packet *pkt);
int handle_pubrec(conn *c, const mqtt_packet *pkt);
int handle_pubrel(conn *c, const mqtt_packet *pkt);
int handle_pubcomp(conn *c, const mqtt_packet *pkt);
int handle_subscribe(conn *c, const mqtt_packet *pkt);
int handle_unsubscribe(conn *c, const mqtt_packet *pkt);
int handle_pingreq(conn *c, const mqtt_packet *pkt);
int handle_disconnect(conn *c, const mqtt_packet *pkt);
int handle_auth(conn *c, const mqtt_packet *pkt);
/* Adopts a handed-off connection on its owner worker. */
void handle_handoff(worker *w, handoff *ho);

/* send_*.c */
int send_connack(conn *c, bool session_present, uint8_t rc, const mqtt_props *props);
/* Sends a delivery as a PUBLISH (topic aliases, properties, size limit).
 * Returns 0 if sent, 1 if discarded as larger than the client's limit, -1 on error. */
int send_publish(conn *c, delivery *d);
int send_ack(conn *c, uint8_t type, uint16_t pid, uint8_t rc);
int send_suback(conn *c, uint8_t type, uint16_t pid, const uint8_t *rcs, uint32_t n);
int send_pingresp(conn *c);
int send_disconnect(conn *c, uint8_t rc, const char *reason);

/* session.c */
session *session_new(worker *w, mqtt_str client_id);
/* Ends a session: unsubscribes, drops queued messages, publishes a pending
 * will, removes it from the worker and frees it. Sets *s = NULL. */
void session_destroy(session **s);
void session_attach(session *s, conn *c);
/* The connection went away; rc is why. Handles will and expiry. */
void session_detach(session *s, uint8_t rc, bool publish_will);
/* Offers a message to a session. qos is the effective QoS (already capped by
 * the subscription). Takes no reference from the caller: it adds its own. */
void session_deliver(session *s, kmq_msg *msg, uint8_t qos, uint8_t flags, const uint32_t *sub_ids,
                     uint16_t n_sub_ids);
/* Moves queued messages into the in-flight window and onto the wire. */
void session_pump(session *s);
void session_resend_inflight(session *s);
int session_ack(session *s, uint16_t pid, uint8_t type, uint8_t rc);
/* Removes every subscription (router, shared registry, map). */
void session_unsubscribe_all(session *s);
int session_unsubscribe(session *s, mqtt_str full_filter);
/* Adds or updates a subscription. *is_new tells whether it existed. */
int session_subscribe(session *s, mqtt_str full, uint8_t options, uint32_t sub_id, bool *is_new);
/* A new connection takes the session over: unlink the old one and settle
 * its will. The caller closes the old connection. */
void session_detach_for_takeover(session *s, bool clean_start);
void session_set_will(session *s, kmq_msg *will, uint32_t delay_s);
void session_publish_will(session *s);
bool session_awaiting_has(session *s, uint16_t pid);
int session_awaiting_add(session *s, uint16_t pid, uint64_t now_ms);
bool session_awaiting_remove(session *s, uint16_t pid);
void dq_free(dq *q);
/* Stored messages answering an on_message_fetch for the subscription `filter`:
 * delivered before anything queued since the lookup began, oldest first,
 * skipping any already queued or in flight. Ends one fetch wait. */
/* State store restore (store.c): arms the expiry of a session loaded
 * offline, left_ms from now (UINT64_MAX: never); puts a stored delivery back
 * (mstate 1/2: in flight with its packet id). 0, or -1 (not kept). */
void session_restored(session *s, uint64_t left_ms);
int session_restore_delivery(session *s, kmq_msg *m, uint8_t qos, uint8_t flags, uint32_t sub_id,
                             uint64_t sseq, uint16_t pid, uint8_t mstate);
void session_deliver_fetched(session *s, const char *filter, uint32_t flen, kmq_msg **msgs,
                             uint32_t n);

/* route.c */
/*
 * Publishes a message: updates the retained store if it is retained, delivers
 * to matching local sessions, forwards to other workers and to shared groups.
 * The caller keeps its reference. Returns the number of local+shared targets
 * (remote workers' matches are not counted).
 */
uint32_t broker_publish(worker *w, kmq_msg *msg);
/* Delivers msg to this worker's sessions whose subscriptions match. */
uint32_t route_local(worker *w, kmq_msg *msg);
/* Frees the worker's match scratch (at worker shutdown). */
void route_scratch_free(worker *w);
/* Sends retained messages matching a new subscription. */
void route_retained(session *s, mqtt_str filter, uint8_t options, uint32_t sub_id);

/* authz.c */
/* Starts the CONNECT password check (copying the packet); calls
 * connect_auth_done on the worker thread when finished. Returns 0 if
 * started, -1 if not. */
int authz_check_password_async(conn *c, const mqtt_connect *ck, const uint8_t *packet,
                               uint32_t len);
bool authz_may_publish(const session *s, mqtt_str topic);
int authz_filter(const session *s, mqtt_str filter);
bool authz_may_receive(const session *s, mqtt_str topic);

/* handle_connect.c */
/* The password check of a CONNECT (a copy of its bytes) finished. Frees copy. */
void connect_auth_done(conn *c, uint8_t *copy, uint32_t len, bool ok);

/* hooks.c: events to the persistence framework, answers back */
void hooks_host_init(broker *b);
/* client.connected, client.disconnected, session.created (c may be NULL) */
void hook_client_event(session *s, conn *c, int point);
/* retained: whether the subscription gets retained messages now (not
 * shared, and MQTT 5 Retain Handling allows it) - on_retain_lookup runs only then */
void hook_subscribed(session *s, mqtt_str full, uint8_t qos, bool retained);
void hook_unsubscribed(session *s, mqtt_str full);
/* message.publish of a client's PUBLISH; sends (or, in sync mode, queues)
 * its PUBACK/PUBREC. Returns 0, -1 if the connection was closed. */
/* stored_seq: non-zero if the state store will report this ack sequence
 * number once the message's stored copies committed (store_publish_end). */
int hook_publish(conn *c, kmq_msg *m, uint16_t pid, uint64_t stored_seq);
void hook_will_published(worker *w, kmq_msg *m);
void hook_delivered(session *s, kmq_msg *m, uint8_t qos);
void hook_acked(session *s, kmq_msg *m);
/* The connection went: pending sync acknowledgements are forgotten. */
void hooks_session_offline(session *s);

/* store.c: the broker's state in the state store (persist/state.h). Every
 * function is a no-op when no store is configured. */
/* Loads sessions, subscriptions, queued and retained messages (broker_init,
 * before the workers run). Returns 0, -1 if the store cannot be read. */
int store_restore(broker *b);
/* After CONNECT (or a DISCONNECT that changed the expiry) decided whether s is
 * persistent: writes it (with everything it holds, the first time) or
 * removes it. online: whether a connection is attached. */
void store_session_sync(session *s, bool online);
/* The session was destroyed (expired, clean start): its rows go. */
void store_session_del(session *s);
void store_sub_put(session *s, mqtt_str full, uint8_t options, uint32_t sub_id);
void store_sub_del(session *s, mqtt_str full);
/* A QoS 1/2 delivery to a stored session: returns its sequence number (0 if
 * not stored). Holds the routing token of a sync-mode PUBLISH, if any. */
uint64_t store_msg_add(session *s, kmq_msg *m, uint8_t qos, uint8_t flags, uint32_t sub_id);
/* mstate 1: QoS 2 PUBLISH sent with pid; 2: PUBREC received, PUBREL sent. */
void store_msg_pid(session *s, uint64_t sseq, uint16_t pid, uint8_t mstate);
/* msgid: the delivery's message id (its body goes with its last row). */
void store_msg_del(session *s, uint64_t sseq, const uint8_t msgid[16]);
/* A retained message set (or, empty, cleared) by broker_publish. */
void store_retain(worker *w, kmq_msg *m);
/* Around broker_publish of a client's QoS 1/2 PUBLISH: in sync mode begins a
 * token (w->route_tok) and returns its ack sequence number; end returns 0 if
 * nothing waited on it (no ack needed), else the sequence the host's
 * ack_done will report. */
void store_publish_begin(conn *c, kmq_msg *m);
uint64_t store_publish_end(worker *w);
/* Releases an inbox item's token hold. */
void store_tok_release(broker *b, state_tok **t);

/* sys.c */
void sys_start(broker *b);
void sys_publish_now(broker *b);
void sys_client_event(worker *w, session *s, conn *c, bool connected, uint8_t rc);

static inline unsigned broker_owner(const broker *b, const void *cid, size_t len)
{
	extern uint64_t hash_stable(const void *p, size_t len);
	return b->nworkers == 1 ? 0 : (unsigned)(hash_stable(cid, len) % b->nworkers);
}

#endif
