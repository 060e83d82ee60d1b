/*
 * loadgen.h - shared declarations of keepmq-loadgen, the MQTT load generator.
 *
 * Design
 * ------
 * One process, one libuv loop, one thread. Every MQTT client the generator
 * simulates is a `struct conn`: a TCP handle plus one fixed-size input and
 * one fixed-size output buffer, both allocated when the connection is set up
 * and never resized. Nothing is allocated per message: publishers encode
 * straight into their output buffer, subscribers decode in place from their
 * input buffer (the codec is zero-copy), and acknowledgements are encoded
 * into the subscriber's own output buffer.
 *
 * Writes are batched: code that produces bytes only appends to `out` and
 * marks the connection dirty; a prepare and a check handle flush every dirty
 * connection once per loop iteration (try_write first, uv_write for the
 * rest). Because `out` has a fixed size, a full buffer is the back-pressure
 * signal: publishers stop producing, subscribers stop reading until their
 * pending acks are written. That keeps user-space queues bounded however
 * slow the broker is.
 *
 * The modes (pubsub.c, conns.c) plug in through two callbacks on the
 * connection: on_packet for every decoded packet and on_close.
 */
#ifndef KEEPMQ_LOADGEN_H
#define KEEPMQ_LOADGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "mqtt/mqtt.h"
#include "util/clock.h"

/* ---------------------------------------------------------------- options */

enum lg_mode { MODE_PUBSUB, MODE_IDLE, MODE_CONNRATE };
enum lg_topology { TOPO_DISTINCT, TOPO_FANIN, TOPO_FANOUT };
/* pubsub subscribers' sessions: clean; persistent (clean session 0 / v5 clean
 * start 0 + session expiry) and online; persistent and offline (subscribe,
 * DISCONNECT, then the publishers run: everything queues in the broker). */
enum lg_sub_session { SUBS_CLEAN, SUBS_PERSISTENT, SUBS_OFFLINE };

struct lg_opts {
	enum lg_mode mode;
	const char *host;
	int port;
	uint8_t protocol; /* 4 (3.1.1) or 5 */
	char prefix[64];  /* client identifier prefix */
	bool json;
	double timeout; /* seconds allowed for connection setup phases */

	/* pubsub */
	int publishers, subscribers;
	int qos;
	uint32_t payload;
	enum lg_topology topology;
	double warmup, duration, drain;
	uint32_t window;      /* max unacked QoS>0 publishes per publisher */
	uint32_t max_backlog; /* max published-but-not-received per publisher;
	                       * 0 = auto, UINT32_MAX = unbounded */
	double rate;          /* total msg/s over all publishers, 0 = as fast as possible */
	enum lg_sub_session sub_session;
	uint32_t session_expiry; /* MQTT 5 persistent subscribers' Session Expiry Interval, s */

	/* idle / connrate */
	int connections; /* idle: N */
	double hold;     /* idle: seconds to hold after all are connected */
	int concurrency; /* connection attempts in progress at once */
	int source_ips;  /* spread over 127.0.0.1..127.0.0.<source_ips>, 0 = auto */
	const char *ready_file;
	uint16_t keepalive;
	long count; /* connrate: K cycles */
};

/* ---------------------------------------------------------------- histogram */

/*
 * Log-linear latency histogram in nanoseconds: each power of two is split
 * into 2^HIST_SUB_BITS linear buckets (about 3% relative error), so it needs
 * no per-sample storage and recording is a few shifts.
 */
#define HIST_SUB_BITS 5
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_MAX_EXP  44 /* values up to 2^44 ns (about 4.9 hours) */
#define HIST_BUCKETS  ((HIST_MAX_EXP - HIST_SUB_BITS + 2) * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t max;
	uint64_t min;
	double sum;
	uint64_t b[HIST_BUCKETS];
};

void hist_init(struct hist *h);
void hist_add(struct hist *h, uint64_t v);
/* Value (ns) below which fraction q (0..1) of the samples lie; 0 if empty. */
uint64_t hist_quantile(const struct hist *h, double q);

/* ---------------------------------------------------------------- connections */

struct lg;
struct conn;

enum conn_state {
	CS_IDLE,       /* not started, or closed and reusable */
	CS_CONNECTING, /* TCP connect in progress */
	CS_CONNACK,    /* CONNECT sent, waiting for CONNACK */
	CS_SUBACK,     /* SUBSCRIBE sent, waiting for SUBACK */
	CS_READY,      /* usable */
	CS_CLOSING,    /* DISCONNECT sent or error; uv_close pending */
};

typedef void (*conn_packet_cb)(struct conn *c, const mqtt_packet *p, const uint8_t *raw,
                               size_t len);
typedef void (*conn_event_cb)(struct conn *c, int status);

struct conn {
	uv_tcp_t tcp;
	uv_connect_t creq;
	uv_write_t wreq;
	struct lg *lg;
	enum conn_state state;
	int idx;         /* index within its role */
	uint8_t version; /* negotiated protocol level */
	bool handle_open;
	bool writing;      /* wreq in flight for out[wstart, wstart + wlen) */
	bool dirty;        /* on the flush list */
	bool read_blocked; /* stopped reading: no room in out for acks */
	bool eof;
	bool expect_eof; /* the broker closing is the expected end */

	uint8_t *in;
	uint32_t in_len, in_cap;
	uint8_t *out;
	uint32_t out_len, out_cap;
	uint32_t wstart, wlen;

	struct conn *next_dirty;
	uint64_t t_start; /* ns: connection attempt began */
	uint64_t now;     /* ns: time of the read that delivered the current packet */

	conn_packet_cb on_packet;
	conn_event_cb on_connected; /* TCP connected (status 0) or failed */
	conn_event_cb on_closed;
	void *role; /* mode-specific state */
};

/* The loop-wide state shared by all modes. */
struct lg {
	uv_loop_t *loop;
	struct lg_opts *o;
	struct sockaddr_storage broker;
	uv_prepare_t prep;
	uv_check_t check;
	uv_idle_t spin;
	bool spinning;
	struct conn *dirty;
	void (*pump)(struct lg *lg); /* mode hook run before every flush */
	uint64_t errors;
	uint64_t conn_errors;
	char first_error[160];
};

int lg_init(struct lg *lg, uv_loop_t *loop, struct lg_opts *o);
void lg_close(struct lg *lg);
void lg_error(struct lg *lg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Keeps the loop polling without blocking while a producer has more to send. */
void lg_set_spin(struct lg *lg, bool on);

/* Allocates the buffers; the conn must be zeroed or previously freed. */
int conn_alloc(struct conn *c, struct lg *lg, uint32_t in_cap, uint32_t out_cap);
void conn_free_buffers(struct conn *c);
/* Starts a TCP connection from source address `src` (NULL = any). */
int conn_start(struct conn *c, const struct sockaddr_in *src);
/* Room for n more output bytes, or NULL if the buffer is too full. */
uint8_t *conn_reserve(struct conn *c, uint32_t n);
/* Commits n bytes written at the pointer conn_reserve returned. */
void conn_commit(struct conn *c, uint32_t n);
/* Encodes a packet into out; false if there is no room. */
bool conn_send(struct conn *c, const mqtt_packet *p);
void conn_mark_dirty(struct conn *c);
/* Sends CONNECT (clean session) with the given identifier and keepalive. */
bool conn_send_connect(struct conn *c, const char *client_id, uint16_t keepalive);
/* The same with the session chosen: clean = false asks for a persistent
 * session (MQTT 3.1.1 clean session 0); expiry_s > 0 adds the Session Expiry
 * Interval property (MQTT 5 only). */
bool conn_send_connect_session(struct conn *c, const char *client_id, uint16_t keepalive,
                               bool clean, uint32_t expiry_s);
/* Sends DISCONNECT and closes once it is written. */
void conn_disconnect(struct conn *c);
/* Closes now (errors). */
void conn_close(struct conn *c);
/* Free room in out (the flush re-enables reading when acks drained). */
uint32_t conn_out_room(const struct conn *c);
/* Flushes every dirty connection. */
void lg_flush(struct lg *lg);

/* ---------------------------------------------------------------- modes */

int run_pubsub(struct lg_opts *o);
int run_idle(struct lg_opts *o);
int run_connrate(struct lg_opts *o);

/* Small JSON/text output helpers (main.c). */
void out_begin(const struct lg_opts *o);
void out_str(const char *key, const char *val);
void out_int(const char *key, long long val);
void out_num(const char *key, double val);
void out_end(void);

/* Raises RLIMIT_NOFILE to its hard limit; returns the resulting soft limit. */
long raise_nofile(void);
/* Source address i of a spread over 127.0.0.1..127.0.0.n. */
void source_addr(struct sockaddr_in *sa, int i, int n);

#endif /* KEEPMQ_LOADGEN_H */
