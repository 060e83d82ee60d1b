/*
 * conn.c - one client's TCP connection: reading, framing, dispatch, writing,
 * closing.
 *
 * Reading: an idle connection owns no input buffer. libuv reads into the
 * worker's shared 64 KiB buffer; whole packets are handled in place (the
 * decoder is zero-copy) and only the tail of an incomplete packet is copied
 * into the connection's own buffer, into which the next reads then go
 * directly until the packet is complete. mqtt_frame rejects an oversize packet
 * from its header, before its body is buffered.
 *
 * Writing: packets are encoded into `out`; the connection is put on the
 * worker's dirty list and flushed once in the check phase with uv_try_write.
 * Whatever the kernel does not take moves to `wbuf` for a uv_write, and new
 * packets go to a fresh `out` meanwhile; `out` + `wbuf` is what a slow reader
 * costs, and session.c stops feeding QoS 0 to it above mqtt.max_pending_bytes.
 *
 * Closing: conn_shutdown flushes then closes, conn_abort closes at once. The
 * session is detached immediately in both cases (so a reconnecting client
 * finds it free), and the struct is freed only in the libuv close callback,
 * after any write callback, and only once no thread-pool request refers to it.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "util/log.h"

conn *conn_new(worker *w, uint8_t listener)
{
	conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (uv_tcp_init(&w->loop, &c->tcp)) {
		free(c);
		return NULL;
	}
	c->tcp.data = c;
	c->w = w;
	c->listener = listener;
	c->created_ms = c->last_rx_ms = worker_now(w);
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
	if (c->peer.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)&c->peer;
		inet_ntop(AF_INET, &a->sin_addr, host, sizeof(host));
		port = ntohs(a->sin_port);
	} else if (c->peer.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)&c->peer;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof(host));
		port = ntohs(a->sin6_port);
	}
	snprintf(out, len, "%s:%u", host, port);
}

size_t conn_pending_bytes(const conn *c)
{
	return (size_t)c->out.len + ((c->flags & CF_WRITING) ? c->wbuf.len : 0);
}

/* ---------------------------------------------------------------- closing */

static void conn_free(conn *c);

/* Drops a thread-pool reference. Returns true if the connection was closed
 * meanwhile and has now been freed (the caller must not touch it). */
bool conn_unref(conn *c)
{
	c->refs--;
	if (c->refs == 0 && c->state == CONN_CLOSED && (c->flags & CF_CLOSE_DONE)) {
		conn_free(c);
		return true;
	}
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
	STAT_ADD(w, connections, -1);
	STAT_INC(w, conn_closed);
	if (!(c->flags & CF_HANDED_OFF))
		atomic_fetch_sub(&w->b->listener_conns[c->listener], 1);
	c->flags |= CF_CLOSE_DONE;
	if (c->refs)
		return; /* a thread-pool request still points here; conn_unref frees */
	conn_free(c);
}

static void conn_free(conn *c)
{
	worker *w = c->w;
	buf_free(&c->in);
	buf_free(&c->out);
	buf_free(&c->wbuf);
	free(c->connect_copy);
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

static void do_close(conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	c->state = CONN_CLOSED;
	uv_close((uv_handle_t *)&c->tcp, on_close);
}

static void detach_session(conn *c, uint8_t rc)
{
	c->disconnect_rc = rc;
	if (c->s) {
		session *s = c->s;
		c->s = NULL;
		sys_client_event(c->w, s, c, false, rc);
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
	c->closing_since_ms = worker_now(c->w);
	uv_read_stop((uv_stream_t *)&c->tcp);
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
	c->flags &= (uint8_t)~CF_OUT_IDLE;
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
	if (buf_reserve(&c->out, n)) {
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
		return NULL;
	}
	return c->out.data + c->out.len;
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

static void on_write(uv_write_t *req, int status)
{
	conn *c = req->data;
	c->flags &= (uint8_t)~CF_WRITING;
	if (c->state == CONN_CLOSED)
		return;
	if (status < 0) {
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
		return;
	}
	STAT_ADD(c->w, bytes_out, c->wbuf.len);
	c->wbuf.len = 0;
	if (c->wbuf.cap > 256 * 1024)
		buf_free(&c->wbuf);
	/* room again: let queued messages flow */
	if (c->s && c->state == CONN_ACTIVE)
		session_pump(c->s);
	conn_flush(c);
}

void conn_flush(conn *c)
{
	if (c->state == CONN_CLOSED || (c->flags & CF_WRITING))
		return;
	if (c->out.len == 0) {
		if (c->state == CONN_CLOSING)
			do_close(c);
		return;
	}
	uv_buf_t b = uv_buf_init((char *)c->out.data, c->out.len);
	int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	if (n == (int)c->out.len) {
		STAT_ADD(c->w, bytes_out, (uint64_t)n);
		c->out.len = 0;
		if (c->state == CONN_CLOSING)
			do_close(c);
		return;
	}
	if (n < 0 && n != UV_EAGAIN) {
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
		return;
	}
	if (n < 0)
		n = 0;
	STAT_ADD(c->w, bytes_out, (uint64_t)n);
	/* the kernel is full: hand the rest to uv_write and start a new out */
	buf tmp = c->wbuf;
	c->wbuf = c->out;
	c->out = tmp;
	c->out.len = 0;
	buf_consume(&c->wbuf, (size_t)n);
	b = uv_buf_init((char *)c->wbuf.data, c->wbuf.len);
	c->wreq.data = c;
	int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
	if (rc) {
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
		return;
	}
	c->flags |= CF_WRITING;
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

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	conn *c = h->data;
	worker *w = c->w;
	if (c->in.len == 0) {
		*b = uv_buf_init((char *)w->readbuf, 64 * 1024);
		return;
	}
	/* an incomplete packet is pending: read the rest straight into it */
	size_t want = 16 * 1024;
	uint32_t plen = 0;
	if (mqtt_frame(c->in.data, c->in.len, 0, &plen) == MQTT_FRAME_INCOMPLETE && plen > c->in.len &&
	    plen - c->in.len > want)
		want = plen - c->in.len;
	if (want > 1024 * 1024)
		want = 1024 * 1024;
	if (buf_reserve(&c->in, want)) {
		*b = uv_buf_init(NULL, 0); /* read_cb gets UV_ENOBUFS */
		return;
	}
	*b = uv_buf_init((char *)c->in.data + c->in.len, c->in.cap - c->in.len);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
	conn *c = st->data;
	worker *w = c->w;
	if (nread < 0) {
		if (nread == UV_ENOBUFS)
			log_warning("out of memory reading from a client: closing it");
		conn_abort(c, nread == UV_EOF ? MQTT_RC_UNSPECIFIED_ERROR : MQTT_RC_UNSPECIFIED_ERROR);
		return;
	}
	if (nread == 0)
		return;
	STAT_ADD(w, bytes_in, (uint64_t)nread);
	if ((uint8_t *)b->base == w->readbuf) {
		size_t used = process(c, w->readbuf, (size_t)nread);
		if (c->state >= CONN_CLOSING)
			return;
		if (used < (size_t)nread && buf_append(&c->in, w->readbuf + used, (size_t)nread - used))
			conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
		return;
	}
	c->in.len += (uint32_t)nread;
	conn_process_input(c);
}

int conn_start(conn *c, const uint8_t *pending, size_t len)
{
	int namelen = sizeof(c->peer);
	uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &namelen);
	uv_tcp_nodelay(&c->tcp, 1);
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
	if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
		return -1;
	c->flags |= CF_READING;
	return 0;
}

void conn_tick(conn *c, uint64_t now)
{
	const broker_config *cfg = c->w->b->cfg;
	switch (c->state) {
	case CONN_NEW:
	case CONN_AUTH:
		if (now - c->created_ms > cfg->idle_timeout_ms) {
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
		/* give back buffers of connections with nothing to send */
		if (!(c->flags & (CF_WRITING | CF_DIRTY)) && c->out.len == 0) {
			if (c->flags & CF_OUT_IDLE) {
				buf_free(&c->out);
				buf_free(&c->wbuf);
			}
			c->flags |= CF_OUT_IDLE;
		}
		break;
	case CONN_CLOSING:
		/* a peer that stopped reading must not keep us forever */
		if (now - c->closing_since_ms > 5000)
			do_close(c);
		break;
	default:
		break;
	}
}
