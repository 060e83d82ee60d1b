/*
 * conn.c - one client's TCP connection: reading, framing, dispatch, writing,
 * closing.
 *
 * I/O is done here on the raw socket, with a uv_poll_t telling when it is
 * readable or writable. libuv's stream layer (uv_tcp_t + uv_write_t) costs
 * about 440 bytes per connection more and a second output buffer; a broker
 * holding tens of thousands of idle clients feels that, and the hand-off of
 * a socket to another worker becomes trivial: a poll handle does not own
 * its descriptor.
 *
 * Reading: an idle connection owns no input buffer. read(2) goes into the
 * worker's shared 64 KiB buffer; whole packets are handled in place (the
 * decoder is zero-copy) and only the tail of an incomplete packet is copied
 * into the connection's own buffer, into which the next reads then go
 * directly until the packet is complete. mqtt_frame rejects an oversize packet
 * from its header, before its body is buffered. At most READS_PER_EVENT reads
 * are done per readiness event so one busy client cannot starve the others.
 *
 * Writing: packets are encoded into `out`; the connection is put on the
 * worker's dirty list and flushed once in the check phase with send(2)
 * (MSG_NOSIGNAL: a closed peer gives EPIPE, never SIGPIPE). What the kernel
 * does not take stays in `out` (out_off marks what was sent) and the poll
 * handle waits for writability. `out` minus out_off is what a slow reader
 * costs; session.c stops feeding QoS 0 to it above mqtt.max_pending_bytes.
 *
 * Closing: conn_shutdown flushes then closes, conn_abort closes at once. The
 * session is detached immediately in both cases (so a reconnecting client
 * finds it free). The struct is freed after libuv's close callback, and only
 * when it is on no dirty list and no thread-pool request refers to it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/broker.h"
#include "util/log.h"

#define READS_PER_EVENT 4

static void on_poll(uv_poll_t *h, int status, int events);

conn *conn_new(worker *w, int fd, uint8_t listener)
{
	conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (uv_poll_init(&w->loop, &c->poll, fd)) {
		free(c);
		return NULL;
	}
	c->poll.data = c;
	c->fd = fd;
	c->w = w;
	c->listener = listener;
	c->since_ms = c->last_rx_ms = worker_now(w);
	c->flags = CF_PROBLEM_INFO;
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	STAT_ADD(w, connections, 1);
	return c;
}

void conn_peer_str(const conn *c, char *out, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (c->peer.sa.sa_family == AF_INET) {
		inet_ntop(AF_INET, &c->peer.in.sin_addr, host, sizeof(host));
		port = ntohs(c->peer.in.sin_port);
	} else if (c->peer.sa.sa_family == AF_INET6) {
		inet_ntop(AF_INET6, &c->peer.in6.sin6_addr, host, sizeof(host));
		port = ntohs(c->peer.in6.sin6_port);
	}
	snprintf(out, len, "%s:%u", host, port);
}

size_t conn_pending_bytes(const conn *c) { return (size_t)(c->out.len - c->out_off); }

/* Asks libuv for the events this connection wants now. */
static void update_poll(conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	int ev = 0;
	if (c->flags & CF_READING)
		ev |= UV_READABLE;
	if (c->flags & CF_WANT_WRITE)
		ev |= UV_WRITABLE;
	if (ev == c->events)
		return;
	c->events = (uint8_t)ev;
	if (ev)
		uv_poll_start(&c->poll, ev, on_poll);
	else
		uv_poll_stop(&c->poll);
}

/* ---------------------------------------------------------------- closing */

static void conn_free(conn *c)
{
	worker *w = c->w;
	buf_free(&c->in);
	buf_free(&c->out);
	if (c->alias_in) {
		for (uint32_t i = 0; i <= (uint32_t)w->b->cfg->max_topic_alias; i++)
			free(c->alias_in[i]);
		free(c->alias_in);
	}
	if (c->alias_out) {
		uint32_t it = 0;
		void *v;
		while (hm_next(c->alias_out, &it, &v))
			free(v);
		hm_free(c->alias_out);
		free(c->alias_out);
	}
	free(c);
}

/* Frees a closed connection once nothing refers to it any more. Returns
 * true if it was freed. */
static bool conn_maybe_free(conn *c)
{
	if (c->state != CONN_CLOSED || !(c->flags & CF_CLOSE_DONE) || c->refs ||
	    (c->flags & CF_DIRTY))
		return false;
	conn_free(c);
	return true;
}

bool conn_unref(conn *c)
{
	c->refs--;
	if (conn_maybe_free(c))
		return true;
	return c->state == CONN_CLOSED;
}

static void on_close(uv_handle_t *h)
{
	conn *c = h->data;
	worker *w = c->w;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->next = c->prev = NULL;
	/* a handed-off socket now belongs to another worker */
	if (!(c->flags & CF_HANDED_OFF)) {
		close(c->fd);
		atomic_fetch_sub(&w->b->listener_conns[c->listener], 1);
	}
	c->fd = -1;
	STAT_ADD(w, connections, -1);
	STAT_INC(w, conn_closed);
	c->flags |= CF_CLOSE_DONE;
	conn_maybe_free(c);
}

static void do_close(conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	c->state = CONN_CLOSED;
	uv_close((uv_handle_t *)&c->poll, on_close);
}

static void detach_session(conn *c, uint8_t rc)
{
	c->disconnect_rc = rc;
	if (c->s) {
		session *s = c->s;
		c->s = NULL;
		/* Unlink both ways before the event: a session subscribed to its
		 * own $SYS event must not have it written to this closing
		 * connection. */
		s->c = NULL;
		sys_client_event(c->w, s, c, false, rc);
		hook_client_event(s, c, HOOK_CLIENT_DISCONNECTED);
		session_detach(s, rc, !c->will_suppress);
	}
}

void conn_abort(conn *c, uint8_t rc)
{
	if (c->state == CONN_CLOSED)
		return;
	detach_session(c, rc);
	do_close(c);
}

void conn_shutdown(conn *c, uint8_t rc, bool send_disc)
{
	if (c->state >= CONN_CLOSING)
		return;
	bool active = c->state == CONN_ACTIVE;
	detach_session(c, rc);
	if (active && send_disc && c->version == MQTT_V5)
		send_disconnect(c, rc, NULL);
	c->state = CONN_CLOSING;
	c->since_ms = worker_now(c->w);
	c->flags &= (uint8_t)~CF_READING;
	update_poll(c);
	conn_flush(c);
}

void conn_protocol_error(conn *c, uint8_t rc, const char *why)
{
	static log_ratelimit rl;
	worker *w = c->w;
	if (rc == MQTT_RC_MALFORMED_PACKET)
		STAT_INC(w, malformed);
	else
		STAT_INC(w, protocol_errors);
	if (log_current_level >= LOG_NOTICE) {
		char peer[64];
		conn_peer_str(c, peer, sizeof(peer));
		log_ratelimited(&rl, 10000, LOG_NOTICE, "client %s%s%s: %s (0x%02x %s): closing",
		                peer, c->s ? " id " : "", c->s ? c->s->client_id : "", why, rc,
		                mqtt_rc_name(rc));
	}
	if (c->state == CONN_ACTIVE && c->version == MQTT_V5) {
		detach_session(c, rc);
		send_disconnect(c, rc, (c->flags & CF_PROBLEM_INFO) ? why : NULL);
	}
	conn_shutdown(c, rc, false);
}

/* ---------------------------------------------------------------- writing */

static void mark_dirty(conn *c)
{
	c->flags &= (uint16_t)~CF_OUT_IDLE;
	if (c->flags & CF_DIRTY)
		return;
	c->flags |= CF_DIRTY;
	c->dirty_next = c->w->dirty;
	c->w->dirty = c;
	worker_wake_self(c->w);
}

uint8_t *conn_reserve(conn *c, size_t n)
{
	if (c->state == CONN_CLOSED)
		return NULL;
	buf *o = &c->out;
	/* reuse the room in front of unsent bytes before growing */
	if (c->out_off && (size_t)o->cap - o->len < n) {
		memmove(o->data, o->data + c->out_off, o->len - c->out_off);
		o->len -= c->out_off;
		c->out_off = 0;
	}
	if (buf_reserve(o, n)) {
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
		return NULL;
	}
	return o->data + o->len;
}

void conn_commit(conn *c, size_t n)
{
	c->out.len += (uint32_t)n;
	STAT_INC(c->w, pkts_out);
	mark_dirty(c);
}

int conn_send_packet(conn *c, const mqtt_packet *pkt)
{
	size_t n = mqtt_encoded_size(pkt, c->version);
	uint8_t *p = conn_reserve(c, n);
	if (!p)
		return -1;
	mqtt_encode(pkt, c->version, p);
	conn_commit(c, n);
	return 0;
}

void conn_flush(conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	size_t pending = c->out.len - c->out_off;
	if (pending) {
		ssize_t n;
		do
			n = send(c->fd, c->out.data + c->out_off, pending, MSG_NOSIGNAL | MSG_DONTWAIT);
		while (n < 0 && errno == EINTR);
		if (n < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
				return;
			}
			n = 0;
		}
		STAT_ADD(c->w, bytes_out, (uint64_t)n);
		c->out_off += (uint32_t)n;
		if ((size_t)n < pending) {
			/* the kernel is full: wait until the socket is writable */
			if (!(c->flags & CF_WANT_WRITE)) {
				c->flags |= CF_WANT_WRITE;
				update_poll(c);
			}
			return;
		}
		c->out.len = c->out_off = 0;
		/* An idle connection should own no buffer. A small one is cheap
		 * to get again (the allocator's per-thread cache hands the same
		 * chunk back); a large one belongs to a busy client and goes
		 * when it stays quiet for a tick (conn_tick). */
		if (c->out.cap <= 4096)
			buf_free(&c->out);
	}
	if (c->flags & CF_WANT_WRITE) {
		c->flags &= (uint16_t)~CF_WANT_WRITE;
		update_poll(c);
		/* room again: let messages waiting for this reader flow */
		if (c->s && c->state == CONN_ACTIVE) {
			session_pump(c->s);
			if (c->out.len) {
				conn_flush(c);
				return;
			}
		}
	}
	if (c->state == CONN_CLOSING)
		do_close(c);
}

/* Called from the check phase for every connection on the dirty list. */
void conn_flush_dirty(conn *c)
{
	c->flags &= (uint16_t)~CF_DIRTY;
	c->dirty_next = NULL;
	if (conn_maybe_free(c))
		return;
	conn_flush(c);
}

/* ---------------------------------------------------------------- reading */

/* Bytes after the packet being handled, for a CONNECT hand-off. */
static _Thread_local const uint8_t *rx_rest;
static _Thread_local size_t rx_rest_len;

const uint8_t *conn_rx_rest(size_t *len)
{
	*len = rx_rest_len;
	return rx_rest;
}

int conn_handle_packet(conn *c, const uint8_t *p, uint32_t len)
{
	worker *w = c->w;
	uint8_t type = p[0] >> 4;
	STAT_INC(w, pkts_in);
	c->last_rx_ms = worker_now(w);
	if (c->state == CONN_NEW) {
		if (type != MQTT_CONNECT) {
			conn_protocol_error(c, MQTT_RC_PROTOCOL_ERROR, "first packet is not CONNECT");
			return -1;
		}
		return handle_connect(c, p, len);
	}
	if (c->state != CONN_ACTIVE)
		return -1;
	if (type == MQTT_CONNECT) {
		conn_protocol_error(c, MQTT_RC_PROTOCOL_ERROR, "second CONNECT");
		return -1;
	}
	mqtt_packet pkt;
	int rc = mqtt_decode(p, len, c->version, &pkt);
	if (rc) {
		char why[64];
		snprintf(why, sizeof(why), "invalid %s packet", mqtt_ptype_name(type));
		conn_protocol_error(c, (uint8_t)rc, why);
		return -1;
	}
	switch (type) {
	case MQTT_PUBLISH: rc = handle_publish(c, &pkt); break;
	case MQTT_PUBACK: rc = handle_puback(c, &pkt); break;
	case MQTT_PUBREC: rc = handle_pubrec(c, &pkt); break;
	case MQTT_PUBREL: rc = handle_pubrel(c, &pkt); break;
	case MQTT_PUBCOMP: rc = handle_pubcomp(c, &pkt); break;
	case MQTT_SUBSCRIBE: rc = handle_subscribe(c, &pkt); break;
	case MQTT_UNSUBSCRIBE: rc = handle_unsubscribe(c, &pkt); break;
	case MQTT_PINGREQ: rc = handle_pingreq(c, &pkt); break;
	case MQTT_DISCONNECT: rc = handle_disconnect(c, &pkt); break;
	case MQTT_AUTH: rc = handle_auth(c, &pkt); break;
	default:
		conn_protocol_error(c, MQTT_RC_PROTOCOL_ERROR, "packet type only a server may send");
		return -1;
	}
	return (rc || c->state != CONN_ACTIVE) ? -1 : 0;
}

/*
 * Handles every whole packet at the start of p[0..n). Returns the number of
 * bytes consumed. Stops early when the connection stops being readable
 * (closed, handed off, or waiting for a password check).
 */
static size_t process(conn *c, const uint8_t *p, size_t n)
{
	uint32_t max = (uint32_t)c->w->b->cfg->max_packet_size;
	size_t off = 0;
	while (off < n && c->state <= CONN_ACTIVE && c->state != CONN_AUTH) {
		uint32_t plen = 0;
		int r = mqtt_frame(p + off, n - off, max, &plen);
		if (r == MQTT_FRAME_INCOMPLETE)
			break;
		if (r != MQTT_FRAME_OK) {
			/* mqtt_frame calls a long length "too large" as soon as it
			 * can; four length bytes that all continue are malformed
			 * whatever the limit, and that is the more exact reason */
			if (r == MQTT_RC_PACKET_TOO_LARGE && n - off >= 5 &&
			    (p[off + 1] & p[off + 2] & p[off + 3] & p[off + 4] & 0x80))
				r = MQTT_RC_MALFORMED_PACKET;
			conn_protocol_error(c, (uint8_t)r,
			                    r == MQTT_RC_PACKET_TOO_LARGE ? "packet larger than mqtt.max_packet_size"
			                                                  : "malformed fixed header");
			return n;
		}
		rx_rest = p + off + plen;
		rx_rest_len = n - off - plen;
		int rc = conn_handle_packet(c, p + off, plen);
		off += plen;
		if (rc)
			break;
	}
	rx_rest = NULL;
	rx_rest_len = 0;
	return off;
}

void conn_process_input(conn *c)
{
	if (!c->in.len)
		return;
	size_t used = process(c, c->in.data, c->in.len);
	if (c->state == CONN_CLOSED || c->state == CONN_CLOSING) {
		buf_free(&c->in);
		return;
	}
	buf_consume(&c->in, used);
	if (c->in.len == 0)
		buf_free(&c->in);
}

/* Reads what the socket has and handles the whole packets in it. */
static void do_read(conn *c)
{
	worker *w = c->w;
	for (int i = 0; i < READS_PER_EVENT && (c->flags & CF_READING); i++) {
		uint8_t *dst;
		size_t room;
		if (c->in.len == 0) {
			dst = w->readbuf;
			room = READBUF_SIZE;
		} else {
			/* an incomplete packet is pending: read the rest straight into it */
			size_t want = 16 * 1024;
			uint32_t plen = 0;
			if (mqtt_frame(c->in.data, c->in.len, 0, &plen) == MQTT_FRAME_INCOMPLETE &&
			    plen > c->in.len && plen - c->in.len > want)
				want = plen - c->in.len;
			if (want > 1024 * 1024)
				want = 1024 * 1024;
			if (buf_reserve(&c->in, want)) {
				log_warning("out of memory reading from a client: closing it");
				conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
				return;
			}
			dst = c->in.data + c->in.len;
			room = c->in.cap - c->in.len;
		}
		ssize_t n = read(c->fd, dst, room);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
			return;
		}
		if (n == 0) { /* EOF */
			conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
			return;
		}
		STAT_ADD(w, bytes_in, (uint64_t)n);
		if (dst == w->readbuf) {
			size_t used = process(c, w->readbuf, (size_t)n);
			if (c->state >= CONN_CLOSING)
				return;
			if (used < (size_t)n &&
			    buf_append(&c->in, w->readbuf + used, (size_t)n - used)) {
				conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
				return;
			}
		} else {
			c->in.len += (uint32_t)n;
			conn_process_input(c);
			if (c->state >= CONN_CLOSING)
				return;
		}
		if ((size_t)n < room)
			return; /* drained */
	}
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	conn *c = h->data;
	if (status < 0) {
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
		return;
	}
	if (events & UV_WRITABLE)
		conn_flush(c);
	if ((events & UV_READABLE) && c->state != CONN_CLOSED)
		do_read(c);
}

int conn_start(conn *c, const uint8_t *pending, size_t len)
{
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (len) {
		if (buf_append(&c->in, pending, len))
			return -1;
		conn_process_input(c);
		if (c->state >= CONN_CLOSING || c->state == CONN_AUTH)
			return 0;
	}
	return conn_read_start(c);
}

int conn_read_start(conn *c)
{
	if (c->state == CONN_CLOSED || c->state == CONN_CLOSING)
		return 0;
	c->flags |= CF_READING;
	update_poll(c);
	return 0;
}

void conn_read_stop(conn *c)
{
	c->flags &= (uint16_t)~CF_READING;
	update_poll(c);
}

void conn_tick(conn *c, uint64_t now)
{
	const broker_config *cfg = c->w->b->cfg;
	switch (c->state) {
	case CONN_NEW:
	case CONN_AUTH:
		if (now - c->since_ms > cfg->idle_timeout_ms) {
			STAT_INC(c->w, idle_timeouts);
			conn_abort(c, MQTT_RC_MAXIMUM_CONNECT_TIME);
		}
		break;
	case CONN_ACTIVE:
		/* 1.5 times the keep-alive without any packet: the client is gone */
		if (c->keepalive_ms && now - c->last_rx_ms > (uint64_t)c->keepalive_ms * 3 / 2) {
			STAT_INC(c->w, keepalive_timeouts);
			if (log_current_level >= LOG_DEBUG) {
				char peer[64];
				conn_peer_str(c, peer, sizeof(peer));
				log_debug("client %s id %s: keep-alive timeout", peer,
				          c->s ? c->s->client_id : "");
			}
			conn_shutdown(c, MQTT_RC_KEEP_ALIVE_TIMEOUT, true);
			break;
		}
		/* stored messages that are late stop holding live ones back */
		if (c->s && c->s->fetching && now >= c->s->fetch_due_ms) {
			c->s->fetching = 0;
			session_pump(c->s);
		}
		/* give back the output buffer of a connection with nothing to send */
		if (!(c->flags & (CF_WANT_WRITE | CF_DIRTY)) && c->out.len == 0) {
			if (c->flags & CF_OUT_IDLE)
				buf_free(&c->out);
			c->flags |= CF_OUT_IDLE;
		}
		break;
	case CONN_CLOSING:
		/* a peer that stopped reading must not keep us forever */
		if (now - c->since_ms > 5000)
			do_close(c);
		break;
	default:
		break;
	}
}
