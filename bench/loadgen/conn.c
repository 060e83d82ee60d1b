/*
 * conn.c - one simulated MQTT client connection: setup, framing, batched
 * writes with bounded buffers.
 *
 * Design
 * ------
 * Input: libuv reads straight into the tail of the connection's input buffer
 * (alloc_cb hands out the free tail), then every complete packet is framed
 * and decoded in place and handed to the mode's on_packet. Leftover partial
 * bytes are moved to the front once per read, not once per packet.
 *
 * Output: producers append encoded packets to `out` and put the connection
 * on the loop's dirty list; lg_flush() (run from a prepare and a check
 * handle, i.e. once before and once after every poll) writes each dirty
 * connection with a single try_write, falling back to one uv_write for the
 * remainder. While that write is in flight, new bytes go after it in the
 * same buffer; the write callback moves them to the front. So there is at
 * most one syscall per connection per loop iteration, however many packets
 * were produced, and at most out_cap bytes ever wait in user space.
 *
 * Back-pressure on the receive side: before handing a packet to the mode we
 * require room for a reply (an ack is a few bytes). If the output buffer is
 * that full we stop reading that socket until the pending write completes;
 * the kernel's socket buffers then push back on the broker, as a real slow
 * client would.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "loadgen.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* Room kept free in `out` before a packet is processed: the largest reply
 * the generator sends in response to one packet (PUBREL/PUBCOMP/PUBACK). */
#define REPLY_ROOM 32

static void on_prepare(uv_prepare_t *h);
static void on_check(uv_check_t *h);
static void process_input(struct conn *c);

int lg_init(struct lg *lg, uv_loop_t *loop, struct lg_opts *o)
{
	memset(lg, 0, sizeof(*lg));
	lg->loop = loop;
	lg->o = o;

	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(o->host, NULL, &hints, &res);
	if (rc != 0 || !res) {
		fprintf(stderr, "loadgen: cannot resolve %s: %s\n", o->host, gai_strerror(rc));
		return -1;
	}
	memcpy(&lg->broker, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	if (lg->broker.ss_family == AF_INET)
		((struct sockaddr_in *)&lg->broker)->sin_port = htons((uint16_t)o->port);
	else
		((struct sockaddr_in6 *)&lg->broker)->sin6_port = htons((uint16_t)o->port);

	/* The flush handles must not keep the loop alive by themselves: the
	 * loop ends when the last connection and timer are gone. */
	uv_prepare_init(loop, &lg->prep);
	uv_prepare_start(&lg->prep, on_prepare);
	uv_unref((uv_handle_t *)&lg->prep);
	uv_check_init(loop, &lg->check);
	uv_check_start(&lg->check, on_check);
	uv_unref((uv_handle_t *)&lg->check);
	uv_idle_init(loop, &lg->spin);
	uv_unref((uv_handle_t *)&lg->spin);
	lg->prep.data = lg->check.data = lg->spin.data = lg;
	return 0;
}

void lg_close(struct lg *lg)
{
	uv_close((uv_handle_t *)&lg->prep, NULL);
	uv_close((uv_handle_t *)&lg->check, NULL);
	uv_close((uv_handle_t *)&lg->spin, NULL);
}

void lg_error(struct lg *lg, const char *fmt, ...)
{
	lg->errors++;
	if (lg->first_error[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(lg->first_error, sizeof(lg->first_error), fmt, ap);
	va_end(ap);
	if (!lg->o->json)
		fprintf(stderr, "loadgen: %s\n", lg->first_error);
}

static void on_spin(uv_idle_t *h)
{
	(void)h;
}

void lg_set_spin(struct lg *lg, bool on)
{
	if (on == lg->spinning)
		return;
	lg->spinning = on;
	if (on)
		uv_idle_start(&lg->spin, on_spin);
	else
		uv_idle_stop(&lg->spin);
}

static void run_pump_and_flush(struct lg *lg)
{
	if (lg->pump)
		lg->pump(lg);
	lg_flush(lg);
}

static void on_prepare(uv_prepare_t *h)
{
	run_pump_and_flush(h->data);
}
static void on_check(uv_check_t *h)
{
	run_pump_and_flush(h->data);
}

int conn_alloc(struct conn *c, struct lg *lg, uint32_t in_cap, uint32_t out_cap)
{
	c->lg = lg;
	c->in = malloc(in_cap);
	c->out = malloc(out_cap);
	if (!c->in || !c->out) {
		free(c->in);
		free(c->out);
		c->in = c->out = NULL;
		return -1;
	}
	c->in_cap = in_cap;
	c->out_cap = out_cap;
	c->version = lg->o->protocol;
	return 0;
}

void conn_free_buffers(struct conn *c)
{
	free(c->in);
	free(c->out);
	c->in = c->out = NULL;
	c->in_cap = c->out_cap = 0;
	c->in_len = c->out_len = 0;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
	struct conn *c = h->data;
	(void)hint;
	buf->base = (char *)c->in + c->in_len;
	buf->len = c->in_cap - c->in_len;
}

static void on_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->handle_open = false;
	c->state = CS_IDLE;
	c->writing = false;
	c->read_blocked = false;
	c->in_len = c->out_len = 0;
	c->wstart = c->wlen = 0;
	if (c->on_closed)
		c->on_closed(c, c->eof ? 0 : -1);
}

void conn_close(struct conn *c)
{
	if (!c->handle_open || uv_is_closing((uv_handle_t *)&c->tcp))
		return;
	c->state = CS_CLOSING;
	uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	(void)buf;
	if (nread == 0)
		return;
	if (nread < 0) {
		if (nread == UV_EOF) {
			c->eof = true;
			/* The broker closing on us is an error unless we asked for it. */
			if (c->state != CS_CLOSING && !c->expect_eof)
				lg_error(c->lg, "connection closed by broker (state %d)", c->state);
		} else {
			lg_error(c->lg, "read: %s", uv_strerror((int)nread));
		}
		conn_close(c);
		return;
	}
	c->in_len += (uint32_t)nread;
	c->now = clock_mono_ns();
	process_input(c);
}

static void start_reading(struct conn *c)
{
	int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	if (rc != 0 && rc != UV_EALREADY) {
		lg_error(c->lg, "read_start: %s", uv_strerror(rc));
		conn_close(c);
	}
}

static void process_input(struct conn *c)
{
	uint32_t off = 0;
	while (c->state != CS_CLOSING && off < c->in_len) {
		uint32_t plen = 0;
		int r = mqtt_frame(c->in + off, c->in_len - off, c->in_cap, &plen);
		if (r == MQTT_FRAME_INCOMPLETE)
			break;
		if (r != MQTT_FRAME_OK) {
			lg_error(c->lg, "bad frame from broker: %s", mqtt_rc_name((uint8_t)r));
			conn_close(c);
			return;
		}
		if (c->out_cap - c->out_len < REPLY_ROOM) {
			/* No room for a reply: wait for the pending write. */
			if (!c->read_blocked) {
				c->read_blocked = true;
				uv_read_stop((uv_stream_t *)&c->tcp);
			}
			break;
		}
		mqtt_packet p;
		int rc = mqtt_decode(c->in + off, plen, c->version, &p);
		if (rc != MQTT_RC_SUCCESS) {
			lg_error(c->lg, "cannot decode %s from broker: %s",
			         mqtt_ptype_name(c->in[off] >> 4), mqtt_rc_name((uint8_t)rc));
			conn_close(c);
			return;
		}
		c->on_packet(c, &p, c->in + off, plen);
		off += plen;
	}
	if (c->state == CS_CLOSING || !c->in)
		return;
	if (off > 0) {
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
}

static void on_connect(uv_connect_t *req, int status)
{
	struct conn *c = req->data;
	if (status == UV_ECANCELED)
		return; /* we closed it ourselves */
	if (status < 0) {
		c->lg->conn_errors++;
		lg_error(c->lg, "connect: %s", uv_strerror(status));
		if (c->on_connected)
			c->on_connected(c, status);
		conn_close(c);
		return;
	}
	if (c->state == CS_CLOSING)
		return;
	start_reading(c);
	if (c->on_connected)
		c->on_connected(c, 0);
}

int conn_start(struct conn *c, const struct sockaddr_in *src)
{
	struct lg *lg = c->lg;
	c->eof = false;
	c->expect_eof = false;
	c->in_len = c->out_len = 0;
	c->wstart = c->wlen = 0;
	c->read_blocked = false;
	c->t_start = clock_mono_ns();
	int rc = uv_tcp_init_ex(lg->loop, &c->tcp, lg->broker.ss_family);
	if (rc != 0) {
		lg_error(lg, "tcp_init: %s", uv_strerror(rc));
		return rc;
	}
	c->tcp.data = c;
	c->creq.data = c;
	c->handle_open = true;
	c->state = CS_CONNECTING;
	if (src && lg->broker.ss_family == AF_INET) {
		/* Defer the source port choice to connect(), so the kernel may reuse
		 * a port for different destinations and, more importantly, picks it
		 * per source address: each 127.0.0.x adds a full ephemeral range. */
		uv_os_fd_t fd;
		int one = 1;
		if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
			setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)src, 0);
		if (rc != 0) {
			lg_error(lg, "bind: %s", uv_strerror(rc));
			conn_close(c);
			return rc;
		}
	}
	/* Batching happens in user space, so Nagle would only add delay. */
	uv_tcp_nodelay(&c->tcp, 1);
	rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&lg->broker, on_connect);
	if (rc != 0) {
		lg->conn_errors++;
		lg_error(lg, "connect: %s", uv_strerror(rc));
		conn_close(c);
		return rc;
	}
	return 0;
}

uint32_t conn_out_room(const struct conn *c)
{
	return c->out_cap - c->out_len;
}

uint8_t *conn_reserve(struct conn *c, uint32_t n)
{
	if (c->out_cap - c->out_len < n)
		return NULL;
	return c->out + c->out_len;
}

void conn_mark_dirty(struct conn *c)
{
	if (c->dirty)
		return;
	c->dirty = true;
	c->next_dirty = c->lg->dirty;
	c->lg->dirty = c;
}

void conn_commit(struct conn *c, uint32_t n)
{
	c->out_len += n;
	conn_mark_dirty(c);
}

bool conn_send(struct conn *c, const mqtt_packet *p)
{
	size_t n = mqtt_encoded_size(p, c->version);
	uint8_t *dst = conn_reserve(c, (uint32_t)n);
	if (!dst)
		return false;
	size_t w = mqtt_encode(p, c->version, dst);
	conn_commit(c, (uint32_t)w);
	return true;
}

bool conn_send_connect(struct conn *c, const char *client_id, uint16_t keepalive)
{
	return conn_send_connect_session(c, client_id, keepalive, true, 0);
}

bool conn_send_connect_session(struct conn *c, const char *client_id, uint16_t keepalive,
                               bool clean, uint32_t expiry_s)
{
	mqtt_packet p;
	memset(&p, 0, sizeof(p));
	p.type = MQTT_CONNECT;
	p.u.connect.protocol_name = mqtt_str_c("MQTT");
	p.u.connect.version = c->version;
	p.u.connect.clean_start = clean;
	if (c->version == MQTT_V5 && expiry_s) {
		p.u.connect.props.present |= MQTT_PF_SESSION_EXPIRY;
		p.u.connect.props.session_expiry = expiry_s;
	}
	p.u.connect.keepalive = keepalive;
	p.u.connect.client_id = mqtt_str_c(client_id);
	c->state = CS_CONNACK;
	return conn_send(c, &p);
}

void conn_disconnect(struct conn *c)
{
	if (!c->handle_open || c->state == CS_CLOSING)
		return;
	if (c->state == CS_CONNECTING) {
		conn_close(c);
		return;
	}
	mqtt_packet p;
	memset(&p, 0, sizeof(p));
	p.type = MQTT_DISCONNECT;
	/* If the buffer is full the broker just sees the socket close: fine at
	 * the end of a run. */
	conn_send(c, &p);
	c->state = CS_CLOSING;
	conn_mark_dirty(c);
}

static void after_written(struct conn *c)
{
	if (c->read_blocked && c->out_cap - c->out_len >= REPLY_ROOM) {
		c->read_blocked = false;
		process_input(c);
		if (!c->read_blocked && c->state != CS_CLOSING)
			start_reading(c);
	}
}

static void on_write(uv_write_t *req, int status)
{
	struct conn *c = req->data;
	c->writing = false;
	if (status < 0) {
		if (status != UV_ECANCELED && c->state != CS_CLOSING)
			lg_error(c->lg, "write: %s", uv_strerror(status));
		conn_close(c);
		return;
	}
	uint32_t done = c->wstart + c->wlen;
	memmove(c->out, c->out + done, c->out_len - done);
	c->out_len -= done;
	c->wstart = c->wlen = 0;
	after_written(c);
	if (c->out_len > 0 || c->state == CS_CLOSING)
		conn_mark_dirty(c);
}

static void flush_conn(struct conn *c)
{
	if (!c->handle_open || uv_is_closing((uv_handle_t *)&c->tcp) || c->writing)
		return;
	if (c->state == CS_CONNECTING)
		return; /* on_connect will produce and mark it again */
	if (c->out_len == 0) {
		/* CLOSING with nothing left to write: the DISCONNECT is out. */
		if (c->state == CS_CLOSING)
			conn_close(c);
		return;
	}
	uv_buf_t b = uv_buf_init((char *)c->out, c->out_len);
	int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
	if (n == UV_EAGAIN)
		n = 0;
	if (n < 0) {
		if (c->state != CS_CLOSING)
			lg_error(c->lg, "write: %s", uv_strerror(n));
		conn_close(c);
		return;
	}
	if ((uint32_t)n == c->out_len) {
		c->out_len = 0;
		after_written(c);
		if (c->state == CS_CLOSING)
			conn_close(c);
		return;
	}
	c->wstart = (uint32_t)n;
	c->wlen = c->out_len - (uint32_t)n;
	c->writing = true;
	c->wreq.data = c;
	b = uv_buf_init((char *)c->out + c->wstart, c->wlen);
	int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
	if (rc != 0) {
		c->writing = false;
		lg_error(c->lg, "write: %s", uv_strerror(rc));
		conn_close(c);
	}
}

void lg_flush(struct lg *lg)
{
	/* Flushing can re-mark connections (after_written may produce acks), so
	 * drain the list until it stays empty. */
	while (lg->dirty) {
		struct conn *list = lg->dirty;
		lg->dirty = NULL;
		while (list) {
			struct conn *c = list;
			list = c->next_dirty;
			c->next_dirty = NULL;
			c->dirty = false;
			flush_conn(c);
		}
	}
}

long raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return -1;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	return (long)rl.rlim_cur;
}

void source_addr(struct sockaddr_in *sa, int i, int n)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = 0;
	/* 127.0.0.1 + k: everything in 127/8 is local on Linux. */
	sa->sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(n > 0 ? i % n : 0));
}
