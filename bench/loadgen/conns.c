/*
 * conns.c - the connection modes: `idle` (hold N idle clients so the driver
 * can measure the broker's memory per connection) and `connrate` (how fast
 * the broker sets up and tears down sessions).
 *
 * Design
 * ------
 * Both start connections through a bounded number of slots in progress at
 * once (--concurrency), so neither the broker's accept backlog nor ours
 * overflows: a SYN dropped by a full backlog costs a 1 s retransmit and would
 * make the numbers measure the kernel instead of the broker.
 *
 * One source IP gives about 28k ephemeral ports towards one listener, fewer
 * than the 50k connections of the largest idle row, so connections are
 * spread round-robin over 127.0.0.1..127.0.0.k (all of 127/8 is loopback on
 * Linux) with IP_BIND_ADDRESS_NO_PORT, which lets the kernel pick the port
 * per source address at connect time.
 *
 * idle signals readiness by writing the number of connected clients to
 * --ready-file (and a line on stderr) once every connection has its CONNACK
 * (or failed), then holds them for --hold seconds, sending PINGREQs only if
 * the hold outlasts 3/4 of the keepalive.
 *
 * connrate runs each cycle as TCP connect, CONNECT, CONNACK (setup latency
 * is measured to here), DISCONNECT, then waits for the broker to close the
 * socket. Waiting for that close puts TIME_WAIT on the broker's side of the
 * connection, so the generator's ephemeral ports are free again at once and
 * a long run cannot run out of them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen.h"

#define SMALL_BUF 256 /* CONNACK (with v5 properties) and PINGRESP fit easily */

struct cs {
	struct lg lg;
	struct lg_opts *o;
	struct conn *conns;
	int nslots;
	int nsrc;
	long target; /* connections (idle) or cycles (connrate) */
	long started, connected, failed, completed, no_close;
	int inflight;
	bool setup_over, done;
	uint64_t t0, t_ready, t_end;
	struct hist lat;
	uv_timer_t timer;
	uv_timer_t ping;
	long nofile;
	char id[96];
};

static void cs_report(struct cs *cs);

static int auto_source_ips(long n)
{
	/* About 28k ephemeral ports per source address; stay well below. */
	long k = (n + 19999) / 20000;
	return k < 1 ? 1 : (int)k;
}

/* ---------------------------------------------------------------- idle */

static void idle_kick(struct cs *cs);

static void idle_all_ready(struct cs *cs);

static void idle_hold_over(uv_timer_t *t)
{
	struct cs *cs = t->data;
	cs->done = true;
	cs->t_end = clock_mono_ns();
	uv_timer_stop(&cs->ping);
	uv_close((uv_handle_t *)&cs->ping, NULL);
	uv_close((uv_handle_t *)&cs->timer, NULL);
	for (int i = 0; i < cs->nslots; i++)
		conn_disconnect(&cs->conns[i]);
}

static void idle_ping(uv_timer_t *t)
{
	struct cs *cs = t->data;
	mqtt_packet p;
	memset(&p, 0, sizeof(p));
	p.type = MQTT_PINGREQ;
	for (int i = 0; i < cs->nslots; i++)
		if (cs->conns[i].state == CS_READY)
			conn_send(&cs->conns[i], &p);
}

static void idle_setup_timeout(uv_timer_t *t)
{
	struct cs *cs = t->data;
	lg_error(&cs->lg, "timed out with %ld of %ld connected", cs->connected, cs->target);
	idle_all_ready(cs);
}

static void idle_all_ready(struct cs *cs)
{
	if (cs->setup_over)
		return;
	cs->setup_over = true;
	cs->t_ready = clock_mono_ns();
	if (cs->o->ready_file) {
		FILE *f = fopen(cs->o->ready_file, "w");
		if (f) {
			fprintf(f, "%ld\n", cs->connected);
			fclose(f);
		}
	}
	if (!cs->o->json)
		fprintf(stderr, "loadgen: READY %ld connected, %ld failed; holding %.1f s\n",
		        cs->connected, cs->failed, cs->o->hold);
	uv_timer_stop(&cs->timer);
	uv_timer_start(&cs->timer, idle_hold_over, (uint64_t)(cs->o->hold * 1000), 0);
	double ka = cs->o->keepalive ? cs->o->keepalive * 0.75 : 0;
	if (ka > 0 && cs->o->hold > ka)
		uv_timer_start(&cs->ping, idle_ping, (uint64_t)(ka * 1000), (uint64_t)(ka * 1000));
}

static void idle_settled(struct cs *cs)
{
	cs->inflight--;
	if (cs->connected + cs->failed >= cs->target)
		idle_all_ready(cs);
	else
		idle_kick(cs);
}

static void idle_packet(struct conn *c, const mqtt_packet *p, const uint8_t *raw, size_t len)
{
	struct cs *cs = (struct cs *)c->lg;
	(void)raw;
	(void)len;
	if (c->state == CS_CONNACK) {
		if (p->type != MQTT_CONNACK || p->u.connack.rc != 0) {
			lg_error(&cs->lg, "CONNACK refused or missing (type %d rc 0x%02x)", p->type,
			         p->type == MQTT_CONNACK ? p->u.connack.rc : 0);
			conn_close(c); /* on_closed counts the failure */
			return;
		}
		c->state = CS_READY;
		c->role = (void *)1;
		cs->connected++;
		hist_add(&cs->lat, c->now - c->t_start);
		idle_settled(cs);
		return;
	}
	if (p->type != MQTT_PINGRESP)
		lg_error(&cs->lg, "idle client got unexpected %s", mqtt_ptype_name(p->type));
}

static void idle_connected(struct conn *c, int status)
{
	struct cs *cs = (struct cs *)c->lg;
	if (status < 0)
		return;
	snprintf(cs->id, sizeof(cs->id), "%s-i%d", cs->o->prefix, c->idx);
	conn_send_connect(c, cs->id, cs->o->keepalive);
}

/* c->role is NULL while an attempt is unsettled and set once it counted as
 * connected or failed, so each attempt is counted exactly once. */
static void idle_closed(struct conn *c, int status)
{
	struct cs *cs = (struct cs *)c->lg;
	(void)status;
	if (cs->done)
		return;
	if (c->role == NULL) {
		c->role = (void *)1;
		cs->failed++;
		idle_settled(cs);
	} else {
		lg_error(&cs->lg, "idle connection %d dropped", c->idx);
	}
}

static void idle_kick(struct cs *cs)
{
	while (!cs->setup_over && cs->inflight < cs->o->concurrency && cs->started < cs->target) {
		struct conn *c = &cs->conns[cs->started];
		struct sockaddr_in src;
		source_addr(&src, (int)cs->started, cs->nsrc);
		cs->started++;
		cs->inflight++;
		c->role = NULL;
		if (conn_start(c, cs->nsrc > 1 ? &src : NULL) != 0 && !c->handle_open) {
			/* Failed before a handle existed: no close callback will come. */
			cs->failed++;
			c->role = (void *)1;
			cs->inflight--;
		}
	}
	if (!cs->setup_over && cs->started >= cs->target &&
	    cs->connected + cs->failed >= cs->target)
		idle_all_ready(cs);
}

int run_idle(struct lg_opts *o)
{
	struct cs *cs = calloc(1, sizeof(*cs));
	uv_loop_t loop;
	if (!cs)
		return 1;
	cs->nofile = raise_nofile();
	if (o->connections < 1) {
		fprintf(stderr, "loadgen: --connections must be >= 1\n");
		return 2;
	}
	if (cs->nofile > 0 && o->connections + 32 > cs->nofile)
		fprintf(stderr,
		        "loadgen: warning: RLIMIT_NOFILE is %ld, too low for %d connections "
		        "(run `ulimit -n 1048576` as root first)\n",
		        cs->nofile, o->connections);
	uv_loop_init(&loop);
	if (lg_init(&cs->lg, &loop, o) != 0)
		return 1;
	cs->o = o;
	cs->target = o->connections;
	cs->nslots = o->connections;
	cs->nsrc = o->source_ips > 0 ? o->source_ips : auto_source_ips(o->connections);
	hist_init(&cs->lat);
	cs->conns = calloc((size_t)cs->nslots, sizeof(struct conn));
	if (!cs->conns)
		return 1;
	for (int i = 0; i < cs->nslots; i++) {
		struct conn *c = &cs->conns[i];
		if (conn_alloc(c, &cs->lg, SMALL_BUF, SMALL_BUF) != 0)
			return 1;
		c->idx = i;
		c->on_packet = idle_packet;
		c->on_connected = idle_connected;
		c->on_closed = idle_closed;
	}
	uv_timer_init(&loop, &cs->timer);
	uv_timer_init(&loop, &cs->ping);
	cs->timer.data = cs->ping.data = cs;
	uv_timer_start(&cs->timer, idle_setup_timeout, (uint64_t)(o->timeout * 1000), 0);
	cs->t0 = clock_mono_ns();
	idle_kick(cs);
	uv_run(&loop, UV_RUN_DEFAULT);
	lg_close(&cs->lg);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	cs_report(cs);
	int rc = cs->connected == cs->target ? 0 : 1;
	for (int i = 0; i < cs->nslots; i++)
		conn_free_buffers(&cs->conns[i]);
	free(cs->conns);
	free(cs);
	return rc;
}

/* ---------------------------------------------------------------- connrate */

static void cr_next(struct cs *cs, struct conn *c);
static void cr_check_done(struct cs *cs);

static void cr_packet(struct conn *c, const mqtt_packet *p, const uint8_t *raw, size_t len)
{
	struct cs *cs = (struct cs *)c->lg;
	(void)raw;
	(void)len;
	if (c->state != CS_CONNACK) {
		lg_error(&cs->lg, "unexpected %s after CONNACK", mqtt_ptype_name(p->type));
		return;
	}
	if (p->type != MQTT_CONNACK || p->u.connack.rc != 0) {
		lg_error(&cs->lg, "CONNACK refused or missing");
		conn_close(c);
		return;
	}
	hist_add(&cs->lat, c->now - c->t_start);
	cs->connected++;
	c->role = (void *)1; /* this cycle succeeded */
	mqtt_packet d;
	memset(&d, 0, sizeof(d));
	d.type = MQTT_DISCONNECT;
	conn_send(c, &d);
	c->state = CS_READY;
	c->expect_eof = true;
	c->t_start = c->now; /* reused: when DISCONNECT was sent, for the sweep */
}

static void cr_connected(struct conn *c, int status)
{
	struct cs *cs = (struct cs *)c->lg;
	if (status < 0)
		return;
	snprintf(cs->id, sizeof(cs->id), "%s-c%d", cs->o->prefix, c->idx);
	conn_send_connect(c, cs->id, 60);
}

static void cr_closed(struct conn *c, int status)
{
	struct cs *cs = (struct cs *)c->lg;
	(void)status;
	cs->inflight--;
	if (c->role)
		cs->completed++;
	else
		cs->failed++;
	cr_next(cs, c);
}

static void cr_check_done(struct cs *cs)
{
	if (cs->done || cs->completed + cs->failed < cs->target)
		return;
	cs->done = true;
	cs->t_end = clock_mono_ns();
	uv_close((uv_handle_t *)&cs->timer, NULL);
	uv_close((uv_handle_t *)&cs->ping, NULL);
}

static void cr_next(struct cs *cs, struct conn *c)
{
	while (cs->started < cs->target) {
		struct sockaddr_in src;
		source_addr(&src, (int)cs->started, cs->nsrc);
		cs->started++;
		c->role = NULL;
		cs->inflight++;
		if (conn_start(c, cs->nsrc > 1 ? &src : NULL) == 0 || c->handle_open)
			return; /* on close, cr_closed picks the next cycle */
		cs->inflight--;
		cs->failed++;
	}
	cr_check_done(cs);
}

/* The broker should close right after DISCONNECT; if it does not within 2 s,
 * close from our side so one stuck cycle cannot stall the run. */
static void cr_sweep(uv_timer_t *t)
{
	struct cs *cs = t->data;
	uint64_t now = clock_mono_ns();
	for (int i = 0; i < cs->nslots; i++) {
		struct conn *c = &cs->conns[i];
		if (c->handle_open && c->expect_eof && c->state == CS_READY &&
		    now - c->t_start > 2000000000ull) {
			cs->no_close++;
			conn_close(c);
		}
	}
	if (now - cs->t0 > (uint64_t)(cs->o->timeout * 1e9)) {
		lg_error(&cs->lg, "connrate timed out");
		for (int i = 0; i < cs->nslots; i++)
			conn_close(&cs->conns[i]);
		cs->target = cs->started; /* stop starting new cycles */
	}
}

int run_connrate(struct lg_opts *o)
{
	struct cs *cs = calloc(1, sizeof(*cs));
	uv_loop_t loop;
	if (!cs)
		return 1;
	if (o->count < 1 || o->concurrency < 1) {
		fprintf(stderr, "loadgen: --count and --concurrency must be >= 1\n");
		return 2;
	}
	cs->nofile = raise_nofile();
	uv_loop_init(&loop);
	if (lg_init(&cs->lg, &loop, o) != 0)
		return 1;
	cs->o = o;
	cs->target = o->count;
	cs->nslots = o->concurrency < o->count ? o->concurrency : (int)o->count;
	cs->nsrc = o->source_ips > 0 ? o->source_ips : 8;
	hist_init(&cs->lat);
	cs->conns = calloc((size_t)cs->nslots, sizeof(struct conn));
	if (!cs->conns)
		return 1;
	uv_timer_init(&loop, &cs->timer);
	uv_timer_init(&loop, &cs->ping);
	cs->timer.data = cs->ping.data = cs;
	uv_timer_start(&cs->timer, cr_sweep, 100, 100);
	cs->t0 = clock_mono_ns();
	for (int i = 0; i < cs->nslots; i++) {
		struct conn *c = &cs->conns[i];
		if (conn_alloc(c, &cs->lg, SMALL_BUF, SMALL_BUF) != 0)
			return 1;
		c->idx = i;
		c->on_packet = cr_packet;
		c->on_connected = cr_connected;
		c->on_closed = cr_closed;
		cr_next(cs, c);
	}
	uv_run(&loop, UV_RUN_DEFAULT);
	lg_close(&cs->lg);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	cs_report(cs);
	int rc = cs->failed == 0 ? 0 : 1;
	for (int i = 0; i < cs->nslots; i++)
		conn_free_buffers(&cs->conns[i]);
	free(cs->conns);
	free(cs);
	return rc;
}

/* ---------------------------------------------------------------- results */

static void cs_report(struct cs *cs)
{
	struct lg_opts *o = cs->o;
	bool idle = o->mode == MODE_IDLE;
	double setup_s;
	if (idle)
		setup_s = cs->t_ready > cs->t0 ? (double)(cs->t_ready - cs->t0) / 1e9 : 0;
	else
		setup_s = cs->t_end > cs->t0 ? (double)(cs->t_end - cs->t0) / 1e9 : 0;
	out_begin(o);
	out_str("mode", idle ? "idle" : "connrate");
	out_int("protocol", o->protocol);
	out_int("concurrency", o->concurrency);
	out_int("source_ips", cs->nsrc);
	out_int("nofile", cs->nofile);
	if (idle) {
		out_int("connections", cs->target);
		out_int("connected", cs->connected);
		out_int("failed", cs->failed);
		out_num("setup_s", setup_s);
		out_num("conn_rate", setup_s > 0 ? (double)cs->connected / setup_s : 0);
		out_num("hold_s", o->hold);
	} else {
		out_int("cycles", cs->target);
		out_int("completed", cs->completed);
		out_int("failed", cs->failed);
		out_int("no_close", cs->no_close);
		out_num("elapsed_s", setup_s);
		out_num("conn_rate", setup_s > 0 ? (double)cs->completed / setup_s : 0);
	}
	out_num("setup_p50_us", (double)hist_quantile(&cs->lat, 0.50) / 1e3);
	out_num("setup_p99_us", (double)hist_quantile(&cs->lat, 0.99) / 1e3);
	out_num("setup_max_us", (double)cs->lat.max / 1e3);
	out_int("errors", (long long)cs->lg.errors);
	out_str("first_error", cs->lg.first_error);
	out_int("ok", idle ? cs->connected == cs->target : cs->failed == 0);
	out_end();
}
