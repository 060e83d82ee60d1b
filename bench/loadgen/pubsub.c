/*
 * pubsub.c - the throughput/latency mode: P publishers, S subscribers.
 *
 * Design
 * ------
 * Phases: connect and subscribe every subscriber (bounded concurrency), then
 * connect every publisher, then run: warm-up, measured window, drain.
 *
 * Every payload starts with a 16-byte header: send time (CLOCK_MONOTONIC ns,
 * taken when the message is encoded, i.e. in the same loop iteration as the
 * write), publisher index and sequence number (all little-endian). Publisher
 * and subscribers live in this one process, so latency is simply receive
 * time minus send time on the same clock. The receive time is the time of
 * the read() that brought the packet in, not of its processing, so a long
 * read batch does not inflate the later messages' latency.
 *
 * A publisher sends while all of these hold (checked in the pump, which runs
 * once per loop iteration before the flush):
 *  - QoS > 0: fewer than `window` publishes unacknowledged (the broker's
 *    Receive Maximum lowers it for MQTT 5);
 *  - its output buffer has room: with QoS 0 that is the only flow control,
 *    i.e. the generator paces itself by socket writability;
 *  - end-to-end backlog: the slowest of its subscribers is at most
 *    `max_backlog` messages behind. Brokers acknowledge a publish once
 *    routed, not once delivered, so without this bound a broker that ingests
 *    faster than the subscribers drain would queue without limit and the
 *    numbers would depend on the run length instead of the broker. By
 *    default the bound is derived from a budget of BACKLOG_BUDGET deliveries
 *    in flight over the whole run (so 2 messages per publisher for a
 *    1000-subscriber fan-out, 102 for 10 distinct pairs): far more than
 *    needed to keep a broker busy, yet it keeps saturation latency from
 *    being just a function of queue growth;
 *  - with --rate, its schedule says the next message is due. Publishers'
 *    schedules are staggered so they do not all fire in the same tick. The
 *    timestamp is the actual send time; a generator that cannot keep up
 *    shows as pub_rate below the target rather than as latency.
 *
 * Loss and duplicate accounting is per (subscriber, publisher) pair: `next`
 * (highest sequence seen + 1), the count of distinct sequences received and
 * a 256-entry bitmap of the sequences just below `next`. An arrival below
 * `next` whose bit is set is a duplicate; one that is not set is a late
 * (reordered) first arrival; one too old for the bitmap cannot be told
 * apart and is counted as "late_unknown". After the drain, lost = sent -
 * distinct received, summed over pairs. No per-message storage anywhere.
 *
 * Subscriber sessions (--sub-session). `clean` (the default): clean
 * sessions. `persistent`: CONNECT with clean session 0 (MQTT 3.1.1) or clean
 * start 0 and a Session Expiry Interval (MQTT 5, --session-expiry), so a
 * broker with a state store writes every QoS 1/2 delivery to them and
 * deletes it when acknowledged; otherwise the run is the same. `offline`:
 * persistent subscribers SUBSCRIBE, then DISCONNECT, and only once all are
 * gone do the publishers connect; every message then queues in the broker
 * for sessions nobody reads. Nothing is received, so the end-to-end backlog
 * bound and the loss accounting do not apply (expected = received = 0); the
 * rate is the acknowledged one, as always. Client identifiers are
 * <prefix>-s<i> and <prefix>-p<i>; the prefix defaults to lg<pid>, so a
 * new run never resumes an older run's session.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen.h"

#define HDR_LEN        16
#define WIN_WORDS      4 /* 256-sequence duplicate window */
#define WIN_BITS       (WIN_WORDS * 64)
#define BACKLOG_BUDGET 1024 /* deliveries in flight, for the default max_backlog */

enum phase { PH_SUBS, PH_PUBS, PH_RUN, PH_DRAIN, PH_DONE };

struct pair {
	uint32_t next;
	uint32_t unique;
	uint32_t dup;
	uint32_t late;
	uint32_t late_unknown;
	uint64_t win[WIN_WORDS]; /* bit k: sequence next-1-k was received */
};

struct pub {
	struct conn c;
	uint32_t seq; /* next sequence number == messages sent */
	uint32_t inflight;
	uint32_t window;
	uint16_t next_pid;
	uint8_t *pid_state; /* per packet id: 0 free, 1 awaiting PUBACK/PUBREC, 2 PUBCOMP */
	uint64_t acked;
	uint64_t sent_measured;
	uint64_t offset_ns; /* --rate: this publisher's phase within the period */
	char topic[48];
	uint8_t *payload; /* template; the header is rewritten per message */
};

struct sub {
	struct conn c;
	struct pair *pairs; /* distinct: 1 (its own publisher), else one per publisher */
	char filter[48];
	bool parked; /* --sub-session offline: subscribed and disconnected */
};

struct ps {
	struct lg lg;
	struct lg_opts *o;
	int P, S;
	struct pub *pubs;
	struct sub *subs;
	enum phase phase;
	int setup_next, setup_inflight, setup_done;
	bool failed;
	uint64_t t_run, t_meas0, t_meas1, t_drain, t_end;
	uint64_t last_activity;
	uint64_t period_ns; /* --rate: per-publisher interval */
	uv_timer_t phase_timer;
	uv_timer_t tick;
	struct hist lat;
	uint64_t recv_total, recv_measured, bytes_measured;
	char client_id[96];
	uint32_t pkt_size;
};

static void start_run(struct ps *ps);
static void begin_drain(struct ps *ps);
static void finish(struct ps *ps);

static inline void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}
static inline uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static bool sub_gets(const struct ps *ps, int s, int p)
{
	return ps->o->topology == TOPO_DISTINCT ? s == p : true;
}

static struct pair *pair_of(struct ps *ps, int s, uint32_t p)
{
	if (ps->o->topology == TOPO_DISTINCT)
		return (int)p == s ? &ps->subs[s].pairs[0] : NULL;
	return &ps->subs[s].pairs[p];
}

/* ---------------------------------------------------------------- accounting */

/* Shifts the window so bit k becomes bit k+n (older sequences move up). */
static void win_shift(uint64_t *w, uint32_t n)
{
	if (n >= WIN_BITS) {
		memset(w, 0, WIN_WORDS * sizeof(*w));
		return;
	}
	unsigned words = n / 64, bits = n % 64;
	for (int i = WIN_WORDS - 1; i >= 0; i--) {
		uint64_t v = 0;
		int src = i - (int)words;
		if (src >= 0) {
			v = w[src] << bits;
			if (bits && src - 1 >= 0)
				v |= w[src - 1] >> (64 - bits);
		}
		w[i] = v;
	}
}

static void account(struct pair *pr, uint32_t seq)
{
	if (seq >= pr->next) {
		win_shift(pr->win, seq - pr->next + 1);
		pr->win[0] |= 1;
		pr->next = seq + 1;
		pr->unique++;
		return;
	}
	uint32_t k = pr->next - 1 - seq;
	if (k >= WIN_BITS) {
		pr->late_unknown++;
		return;
	}
	uint64_t bit = (uint64_t)1 << (k % 64);
	if (pr->win[k / 64] & bit) {
		pr->dup++;
	} else {
		pr->win[k / 64] |= bit;
		pr->unique++;
		pr->late++;
	}
}

/* ---------------------------------------------------------------- setup */

static void setup_kick(struct ps *ps);

static void fail(struct ps *ps, const char *why)
{
	if (!ps->failed)
		lg_error(&ps->lg, "%s", why);
	ps->failed = true;
	finish(ps);
}

static void setup_one_done(struct ps *ps)
{
	ps->setup_inflight--;
	ps->setup_done++;
	int n = ps->phase == PH_SUBS ? ps->S : ps->P;
	if (ps->setup_done < n) {
		setup_kick(ps);
		return;
	}
	ps->setup_next = ps->setup_inflight = ps->setup_done = 0;
	if (ps->phase == PH_SUBS) {
		ps->phase = PH_PUBS;
		setup_kick(ps);
	} else {
		start_run(ps);
	}
}

static void on_conn_closed(struct conn *c, int status)
{
	struct ps *ps = (struct ps *)c->lg;
	(void)status;
	if (c->role == (void *)1 && ((struct sub *)c)->parked) {
		/* --sub-session offline: its DISCONNECT is written; the session
		 * is the broker's to keep */
		if (ps->phase == PH_SUBS)
			setup_one_done(ps);
		return;
	}
	if (ps->phase != PH_DONE)
		fail(ps, ps->lg.first_error[0] ? ps->lg.first_error
		                               : "a connection closed during the run");
}

static void on_tcp_connected(struct conn *c, int status)
{
	struct ps *ps = (struct ps *)c->lg;
	if (status < 0)
		return; /* on_conn_closed reports it */
	bool is_sub = c->role == (void *)1;
	snprintf(ps->client_id, sizeof(ps->client_id), "%s-%c%d", ps->o->prefix, is_sub ? 's' : 'p',
	         c->idx);
	if (is_sub && ps->o->sub_session != SUBS_CLEAN)
		conn_send_connect_session(c, ps->client_id, 60, false, ps->o->session_expiry);
	else
		conn_send_connect(c, ps->client_id, 60);
}

static bool connack_ok(struct ps *ps, struct conn *c, const mqtt_packet *p)
{
	if (p->type != MQTT_CONNACK) {
		lg_error(&ps->lg, "expected CONNACK, got %s", mqtt_ptype_name(p->type));
		return false;
	}
	if (p->u.connack.rc != 0) {
		lg_error(&ps->lg, "CONNACK refused: 0x%02x", p->u.connack.rc);
		return false;
	}
	return true;
}

/* ---------------------------------------------------------------- subscriber */

static void sub_packet(struct conn *c, const mqtt_packet *p, const uint8_t *raw, size_t len)
{
	struct ps *ps = (struct ps *)c->lg;
	struct sub *s = (struct sub *)c;
	mqtt_packet r;
	(void)raw;
	(void)len;

	switch (c->state) {
	case CS_CONNACK:
		if (!connack_ok(ps, c, p)) {
			fail(ps, ps->lg.first_error);
			return;
		}
		memset(&r, 0, sizeof(r));
		/* SUBSCRIBE's entries are the raw payload: filter + options byte. */
		uint8_t entry[64];
		size_t fl = strlen(s->filter);
		entry[0] = (uint8_t)(fl >> 8);
		entry[1] = (uint8_t)fl;
		memcpy(entry + 2, s->filter, fl);
		entry[2 + fl] = (uint8_t)ps->o->qos;
		r.type = MQTT_SUBSCRIBE;
		r.flags = 0x2;
		r.u.subscribe.packet_id = 1;
		r.u.subscribe.entries = (mqtt_str){entry, (uint32_t)(fl + 3)};
		r.u.subscribe.count = 1;
		conn_send(c, &r);
		c->state = CS_SUBACK;
		return;
	case CS_SUBACK:
		if (p->type != MQTT_SUBACK || p->u.suback.count < 1 || p->u.suback.rcs[0] >= 0x80) {
			fail(ps, "subscription refused");
			return;
		}
		if (p->u.suback.rcs[0] != ps->o->qos)
			lg_error(&ps->lg, "subscription granted QoS %d instead of %d",
			         p->u.suback.rcs[0], ps->o->qos);
		c->state = CS_READY;
		if (ps->o->sub_session == SUBS_OFFLINE) {
			/* setup goes on once it is closed (on_conn_closed) */
			s->parked = true;
			conn_disconnect(c);
			return;
		}
		setup_one_done(ps);
		return;
	default:
		break;
	}

	switch (p->type) {
	case MQTT_PUBLISH: {
		const mqtt_publish *m = &p->u.publish;
		if (m->payload.len < HDR_LEN) {
			lg_error(&ps->lg, "short payload (%u bytes)", m->payload.len);
		} else {
			uint64_t ts = get_le64(m->payload.p);
			uint32_t pi = get_le32(m->payload.p + 8);
			uint32_t seq = get_le32(m->payload.p + 12);
			struct pair *pr = pi < (uint32_t)ps->P ? pair_of(ps, c->idx, pi) : NULL;
			if (!pr) {
				lg_error(&ps->lg, "subscriber %d got a message of publisher %u",
				         c->idx, pi);
			} else {
				account(pr, seq);
			}
			ps->recv_total++;
			ps->last_activity = c->now;
			if (c->now >= ps->t_meas0 && c->now < ps->t_meas1) {
				ps->recv_measured++;
				ps->bytes_measured += m->payload.len;
				hist_add(&ps->lat, c->now > ts ? c->now - ts : 0);
			}
		}
		if (m->qos > 0) {
			memset(&r, 0, sizeof(r));
			r.type = m->qos == 1 ? MQTT_PUBACK : MQTT_PUBREC;
			r.u.ack.packet_id = m->packet_id;
			conn_send(c, &r); /* room guaranteed by conn.c's REPLY_ROOM */
		}
		return;
	}
	case MQTT_PUBREL:
		memset(&r, 0, sizeof(r));
		r.type = MQTT_PUBCOMP;
		r.u.ack.packet_id = p->u.ack.packet_id;
		conn_send(c, &r);
		return;
	case MQTT_PINGRESP:
		return;
	default:
		lg_error(&ps->lg, "subscriber got unexpected %s", mqtt_ptype_name(p->type));
	}
}

/* ---------------------------------------------------------------- publisher */

static void pub_packet(struct conn *c, const mqtt_packet *p, const uint8_t *raw, size_t len)
{
	struct ps *ps = (struct ps *)c->lg;
	struct pub *pb = (struct pub *)c;
	(void)raw;
	(void)len;

	if (c->state == CS_CONNACK) {
		if (!connack_ok(ps, c, p)) {
			fail(ps, ps->lg.first_error);
			return;
		}
		const mqtt_props *pr = &p->u.connack.props;
		if ((pr->present & MQTT_PF_RECEIVE_MAXIMUM) && pr->receive_maximum < pb->window)
			pb->window = pr->receive_maximum;
		c->state = CS_READY;
		setup_one_done(ps);
		return;
	}
	uint16_t id;
	switch (p->type) {
	case MQTT_PUBACK:
	case MQTT_PUBREC:
	case MQTT_PUBCOMP:
		id = p->u.ack.packet_id;
		uint8_t want = p->type == MQTT_PUBCOMP ? 2 : 1;
		if (pb->pid_state[id] != want || (p->type == MQTT_PUBACK) != (ps->o->qos == 1)) {
			lg_error(&ps->lg, "unexpected %s for packet id %u",
			         mqtt_ptype_name(p->type), id);
			return;
		}
		ps->last_activity = c->now;
		if (p->u.ack.rc >= 0x80) {
			/* v5 refusal: the message is gone; count it, free the slot. */
			lg_error(&ps->lg, "%s with reason 0x%02x", mqtt_ptype_name(p->type),
			         p->u.ack.rc);
			pb->pid_state[id] = 0;
			pb->inflight--;
			return;
		}
		if (p->type == MQTT_PUBREC) {
			mqtt_packet r;
			memset(&r, 0, sizeof(r));
			r.type = MQTT_PUBREL;
			r.flags = 0x2;
			r.u.ack.packet_id = id;
			conn_send(c, &r);
			pb->pid_state[id] = 2;
			return;
		}
		pb->pid_state[id] = 0;
		pb->inflight--;
		pb->acked++;
		return;
	case MQTT_PINGRESP:
		return;
	default:
		lg_error(&ps->lg, "publisher got unexpected %s", mqtt_ptype_name(p->type));
	}
}

/* Lowest `next` over this publisher's subscribers: how far the slowest one got. */
static uint32_t slowest_sub(struct ps *ps, int p)
{
	if (ps->o->topology == TOPO_DISTINCT)
		return ps->subs[p].pairs[0].next;
	uint32_t m = UINT32_MAX;
	for (int s = 0; s < ps->S; s++) {
		uint32_t n = ps->subs[s].pairs[p].next;
		if (n < m)
			m = n;
	}
	return m;
}

/* Sends what the limits allow. Returns true when it stopped only because the
 * output buffer filled up, i.e. it could go on as soon as that is written. */
static bool produce(struct ps *ps, struct pub *pb, uint64_t now)
{
	struct conn *c = &pb->c;
	if (c->state != CS_READY)
		return false;
	int qos = ps->o->qos;
	uint64_t limit = UINT64_MAX;
	if (ps->o->max_backlog != UINT32_MAX && ps->o->sub_session != SUBS_OFFLINE)
		limit = (uint64_t)slowest_sub(ps, c->idx) + ps->o->max_backlog;
	mqtt_packet m;
	memset(&m, 0, sizeof(m));
	m.type = MQTT_PUBLISH;
	m.u.publish.qos = (uint8_t)qos;
	m.u.publish.topic = mqtt_str_c(pb->topic);
	m.u.publish.payload = (mqtt_str){pb->payload, ps->o->payload};
	bool measuring = now >= ps->t_meas0 && now < ps->t_meas1;

	for (;;) {
		if (qos > 0 && pb->inflight >= pb->window)
			return false;
		if (pb->seq >= limit)
			return false;
		if (ps->period_ns &&
		    ps->t_run + pb->offset_ns + (uint64_t)pb->seq * ps->period_ns > now)
			return false;
		uint8_t *dst = conn_reserve(c, ps->pkt_size);
		if (!dst)
			return !c->writing;
		if (qos > 0) {
			/* Next free packet id; the window is far below 65535, so the
			 * search ends quickly. */
			uint16_t id = pb->next_pid;
			while (id == 0 || pb->pid_state[id])
				id++;
			pb->next_pid = (uint16_t)(id + 1);
			pb->pid_state[id] = 1;
			pb->inflight++;
			m.u.publish.packet_id = id;
		}
		put_le64(pb->payload, now);
		put_le32(pb->payload + 8, (uint32_t)c->idx);
		put_le32(pb->payload + 12, pb->seq);
		size_t w = mqtt_encode(&m, c->version, dst);
		conn_commit(c, (uint32_t)w);
		pb->seq++;
		if (measuring)
			pb->sent_measured++;
	}
}

static void pump(struct lg *lg)
{
	struct ps *ps = (struct ps *)lg;
	if (ps->phase != PH_RUN) {
		lg_set_spin(lg, false);
		return;
	}
	uint64_t now = clock_mono_ns();
	if (now >= ps->t_meas1) {
		begin_drain(ps);
		return;
	}
	bool spin = false;
	for (int i = 0; i < ps->P; i++)
		spin |= produce(ps, &ps->pubs[i], now);
	lg_set_spin(lg, spin);
}

/* ---------------------------------------------------------------- phases */

static void setup_kick(struct ps *ps)
{
	int n = ps->phase == PH_SUBS ? ps->S : ps->P;
	while (ps->setup_inflight < ps->o->concurrency && ps->setup_next < n) {
		struct conn *c = ps->phase == PH_SUBS ? &ps->subs[ps->setup_next].c
		                                      : &ps->pubs[ps->setup_next].c;
		ps->setup_next++;
		ps->setup_inflight++;
		if (conn_start(c, NULL) != 0) {
			fail(ps, "cannot start a connection");
			return;
		}
	}
}

static void on_phase_timer(uv_timer_t *t)
{
	struct ps *ps = t->data;
	if (ps->phase == PH_SUBS || ps->phase == PH_PUBS)
		fail(ps, "timed out connecting/subscribing");
	else if (ps->phase == PH_RUN)
		begin_drain(ps);
}

static void on_tick(uv_timer_t *t)
{
	struct ps *ps = t->data;
	uint64_t now = clock_mono_ns();
	if (ps->phase == PH_RUN) {
		/* Nothing to do: waking the loop lets the pump send what the
		 * --rate schedule made due. */
		return;
	}
	if (ps->phase != PH_DRAIN)
		return;
	bool complete = true;
	for (int p = 0; p < ps->P && complete; p++) {
		if (ps->pubs[p].inflight)
			complete = false;
		for (int s = 0; s < ps->S && complete && ps->o->sub_session != SUBS_OFFLINE; s++)
			if (sub_gets(ps, s, p) &&
			    pair_of(ps, s, (uint32_t)p)->unique < ps->pubs[p].seq)
				complete = false;
	}
	/* Quiet for a second: whatever is missing is not coming. */
	bool quiet = now - ps->last_activity > 1000000000ull && now - ps->t_drain > 1000000000ull;
	bool expired = now - ps->t_drain > (uint64_t)(ps->o->drain * 1e9);
	if (complete || quiet || expired)
		finish(ps);
}

static void start_run(struct ps *ps)
{
	ps->phase = PH_RUN;
	uv_timer_stop(&ps->phase_timer);
	ps->t_run = clock_mono_ns();
	ps->t_meas0 = ps->t_run + (uint64_t)(ps->o->warmup * 1e9);
	ps->t_meas1 = ps->t_meas0 + (uint64_t)(ps->o->duration * 1e9);
	ps->last_activity = ps->t_run;
	/* Backstop only: the pump notices the end of the window itself. */
	uv_timer_start(&ps->phase_timer, on_phase_timer,
	               (uint64_t)((ps->o->warmup + ps->o->duration) * 1000) + 1, 0);
	if (ps->period_ns)
		uv_timer_start(&ps->tick, on_tick, 1, 1);
	if (!ps->o->json)
		fprintf(stderr, "loadgen: %d subscribers and %d publishers connected, running\n",
		        ps->S, ps->P);
}

static void begin_drain(struct ps *ps)
{
	if (ps->phase != PH_RUN)
		return;
	ps->phase = PH_DRAIN;
	ps->t_drain = clock_mono_ns();
	lg_set_spin(&ps->lg, false);
	uv_timer_stop(&ps->phase_timer);
	uv_timer_start(&ps->tick, on_tick, 20, 20);
}

static void finish(struct ps *ps)
{
	if (ps->phase == PH_DONE)
		return;
	ps->phase = PH_DONE;
	ps->t_end = clock_mono_ns();
	lg_set_spin(&ps->lg, false);
	uv_timer_stop(&ps->tick);
	uv_timer_stop(&ps->phase_timer);
	uv_close((uv_handle_t *)&ps->tick, NULL);
	uv_close((uv_handle_t *)&ps->phase_timer, NULL);
	for (int i = 0; i < ps->P; i++)
		if (ps->pubs[i].c.handle_open)
			conn_disconnect(&ps->pubs[i].c);
	for (int i = 0; i < ps->S; i++)
		if (ps->subs[i].c.handle_open)
			conn_disconnect(&ps->subs[i].c);
}

/* ---------------------------------------------------------------- results */

static void report(struct ps *ps)
{
	struct lg_opts *o = ps->o;
	uint64_t sent = 0, sent_meas = 0, acked = 0, expected = 0, unique = 0, dup = 0, late = 0,
	         late_unknown = 0;
	for (int p = 0; p < ps->P; p++) {
		sent += ps->pubs[p].seq;
		sent_meas += ps->pubs[p].sent_measured;
		acked += ps->pubs[p].acked;
		for (int s = 0; s < ps->S && o->sub_session != SUBS_OFFLINE; s++) {
			if (!sub_gets(ps, s, p))
				continue;
			struct pair *pr = pair_of(ps, s, (uint32_t)p);
			expected += ps->pubs[p].seq;
			unique += pr->unique;
			dup += pr->dup;
			late += pr->late;
			late_unknown += pr->late_unknown;
		}
	}
	uint64_t lost = expected > unique ? expected - unique : 0;
	double secs = ps->t_meas1 > ps->t_meas0 ? (double)(ps->t_meas1 - ps->t_meas0) / 1e9 : 0;
	if (ps->t_end && ps->t_end < ps->t_meas1 && ps->t_end > ps->t_meas0)
		secs = (double)(ps->t_end - ps->t_meas0) / 1e9; /* run cut short */
	const char *topo[] = {"distinct", "fanin", "fanout"};
	const char *sessions[] = {"clean", "persistent", "offline"};

	out_begin(o);
	out_str("mode", "pubsub");
	out_str("topology", topo[o->topology]);
	out_int("protocol", o->protocol);
	out_str("sub_session", sessions[o->sub_session]);
	out_int("qos", o->qos);
	out_int("publishers", ps->P);
	out_int("subscribers", ps->S);
	out_int("payload", o->payload);
	out_int("window", o->window);
	out_int("max_backlog", o->max_backlog == UINT32_MAX ? -1 : (long long)o->max_backlog);
	out_num("rate_target", o->rate);
	out_num("warmup_s", o->warmup);
	out_num("measured_s", secs);
	out_int("published", (long long)sent);
	out_int("published_measured", (long long)sent_meas);
	out_int("acked", (long long)acked);
	out_int("expected", (long long)expected);
	out_int("received", (long long)ps->recv_total);
	out_int("received_measured", (long long)ps->recv_measured);
	out_num("pub_rate", secs > 0 ? (double)sent_meas / secs : 0);
	out_num("recv_rate", secs > 0 ? (double)ps->recv_measured / secs : 0);
	out_num("recv_mbps", secs > 0 ? (double)ps->bytes_measured * 8 / 1e6 / secs : 0);
	out_num("lat_p50_us", (double)hist_quantile(&ps->lat, 0.50) / 1e3);
	out_num("lat_p90_us", (double)hist_quantile(&ps->lat, 0.90) / 1e3);
	out_num("lat_p99_us", (double)hist_quantile(&ps->lat, 0.99) / 1e3);
	out_num("lat_p999_us", (double)hist_quantile(&ps->lat, 0.999) / 1e3);
	out_num("lat_max_us", (double)ps->lat.max / 1e3);
	out_num("lat_mean_us", ps->lat.count ? ps->lat.sum / (double)ps->lat.count / 1e3 : 0);
	out_int("lost", (long long)lost);
	out_num("lost_pct", expected ? 100.0 * (double)lost / (double)expected : 0);
	out_int("dup", (long long)dup);
	out_int("late", (long long)late);
	out_int("late_unknown", (long long)late_unknown);
	out_num("drain_s", ps->t_end > ps->t_drain && ps->t_drain
	                       ? (double)(ps->t_end - ps->t_drain) / 1e9
	                       : 0);
	out_int("errors", (long long)(ps->lg.errors));
	out_str("first_error", ps->lg.first_error);
	out_int("ok", !ps->failed && ps->lg.errors == 0);
	out_end();
}

/* ---------------------------------------------------------------- entry */

int run_pubsub(struct lg_opts *o)
{
	if (o->payload < HDR_LEN) {
		fprintf(stderr, "loadgen: --payload must be >= %d\n", HDR_LEN);
		return 2;
	}
	if (o->qos < 0 || o->qos > 2) {
		fprintf(stderr, "loadgen: --qos must be 0, 1 or 2\n");
		return 2;
	}
	if (o->topology == TOPO_DISTINCT && o->publishers != o->subscribers) {
		fprintf(stderr, "loadgen: distinct topology needs --publishers == --subscribers\n");
		return 2;
	}
	if (o->publishers < 1 || o->subscribers < 1) {
		fprintf(stderr, "loadgen: need at least one publisher and one subscriber\n");
		return 2;
	}
	if (o->window < 1 || o->window > 65535)
		o->window = 64;
	if (o->max_backlog == 0) {
		uint64_t fan = o->topology == TOPO_DISTINCT ? 1 : (uint64_t)o->subscribers;
		uint64_t b = BACKLOG_BUDGET / ((uint64_t)o->publishers * fan);
		o->max_backlog = b < 2 ? 2 : (uint32_t)b;
	}
	raise_nofile();

	uv_loop_t loop;
	uv_loop_init(&loop);
	struct ps *ps = calloc(1, sizeof(*ps));
	if (!ps || lg_init(&ps->lg, &loop, o) != 0)
		return 1;
	ps->o = o;
	ps->P = o->publishers;
	ps->S = o->subscribers;
	ps->lg.pump = pump;
	hist_init(&ps->lat);
	if (o->rate > 0)
		ps->period_ns = (uint64_t)(1e9 * ps->P / o->rate);
	if (ps->period_ns == 0 && o->rate > 0)
		ps->period_ns = 1;
	ps->pubs = calloc((size_t)ps->P, sizeof(*ps->pubs));
	ps->subs = calloc((size_t)ps->S, sizeof(*ps->subs));
	if (!ps->pubs || !ps->subs)
		return 1;

	/* Size of one PUBLISH on the wire, to size buffers (topics are short and
	 * of bounded length, so the longest one gives an upper bound). */
	mqtt_packet m;
	memset(&m, 0, sizeof(m));
	m.type = MQTT_PUBLISH;
	m.u.publish.qos = (uint8_t)(o->qos ? o->qos : 1);
	m.u.publish.packet_id = 1;
	char longest[48];
	snprintf(longest, sizeof(longest), "bench/%d", ps->P > 1 ? ps->P : 1);
	m.u.publish.topic = mqtt_str_c(longest);
	m.u.publish.payload = (mqtt_str){NULL, o->payload};
	uint8_t *dummy = calloc(1, o->payload);
	m.u.publish.payload.p = dummy;
	ps->pkt_size = (uint32_t)mqtt_encoded_size(&m, o->protocol) + 8;
	free(dummy);

	uint32_t pub_out = ps->pkt_size * 8 > 65536 ? ps->pkt_size * 8 : 65536;
	uint32_t sub_in = ps->pkt_size * 4 > 65536 ? ps->pkt_size * 4 : 65536;
	for (int i = 0; i < ps->P; i++) {
		struct pub *pb = &ps->pubs[i];
		if (conn_alloc(&pb->c, &ps->lg, 4096, pub_out) != 0)
			return 1;
		pb->c.idx = i;
		pb->c.role = (void *)0;
		pb->c.on_packet = pub_packet;
		pb->c.on_connected = on_tcp_connected;
		pb->c.on_closed = on_conn_closed;
		pb->window = o->window;
		pb->offset_ns = ps->period_ns * (uint64_t)i / (uint64_t)ps->P;
		pb->next_pid = 1;
		pb->pid_state = calloc(65536, 1);
		pb->payload = malloc(o->payload);
		if (!pb->pid_state || !pb->payload)
			return 1;
		for (uint32_t k = 0; k < o->payload; k++)
			pb->payload[k] = (uint8_t)('a' + k % 26);
		if (o->topology == TOPO_FANOUT)
			snprintf(pb->topic, sizeof(pb->topic), "bench/x");
		else
			snprintf(pb->topic, sizeof(pb->topic), "bench/%d", i);
	}
	for (int i = 0; i < ps->S; i++) {
		struct sub *s = &ps->subs[i];
		if (conn_alloc(&s->c, &ps->lg, sub_in, 8192) != 0)
			return 1;
		s->c.idx = i;
		s->c.role = (void *)1;
		s->c.on_packet = sub_packet;
		s->c.on_connected = on_tcp_connected;
		s->c.on_closed = on_conn_closed;
		s->pairs =
		    calloc(o->topology == TOPO_DISTINCT ? 1 : (size_t)ps->P, sizeof(struct pair));
		if (!s->pairs)
			return 1;
		if (o->topology == TOPO_DISTINCT)
			snprintf(s->filter, sizeof(s->filter), "bench/%d", i);
		else if (o->topology == TOPO_FANIN)
			snprintf(s->filter, sizeof(s->filter), "bench/#");
		else
			snprintf(s->filter, sizeof(s->filter), "bench/x");
	}

	uv_timer_init(&loop, &ps->phase_timer);
	uv_timer_init(&loop, &ps->tick);
	ps->phase_timer.data = ps->tick.data = ps;
	uv_timer_start(&ps->phase_timer, on_phase_timer, (uint64_t)(o->timeout * 1000), 0);
	ps->phase = PH_SUBS;
	setup_kick(ps);

	uv_run(&loop, UV_RUN_DEFAULT);
	lg_close(&ps->lg);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);

	report(ps);
	int rc = ps->failed ? 1 : 0;
	for (int i = 0; i < ps->P; i++) {
		conn_free_buffers(&ps->pubs[i].c);
		free(ps->pubs[i].pid_state);
		free(ps->pubs[i].payload);
	}
	for (int i = 0; i < ps->S; i++) {
		conn_free_buffers(&ps->subs[i].c);
		free(ps->subs[i].pairs);
	}
	free(ps->pubs);
	free(ps->subs);
	free(ps);
	return rc;
}
