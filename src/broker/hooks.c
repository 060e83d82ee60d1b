/*
 * hooks.c - where the broker meets the persistence framework.
 *
 * Outbound: the hook_* functions build a hook_event from session and
 * connection state and hand it to persist_fire, on the owner worker. With no
 * rule bound to a hook point each costs one relaxed load.
 *
 * Inbound: backend threads answer through the persist_host callbacks at the
 * bottom, which only copy the answer into an INBOX_CALL item for the owner
 * worker. There the session is found again by client id and checked by
 * serial (a session that ended and was created anew under the same id does
 * not receive answers meant for the old one).
 *
 * Sync-mode acknowledgements. A QoS 1/2 PUBLISH whose message.publish jobs
 * run in a sync backend gets an entry in the session's ack queue holding
 * the number of jobs still to commit. PUBACK/PUBREC go out from the head of
 * that queue only, so acknowledgements keep the order of the PUBLISHes
 * (MQTT-4.6.0-2/3) even when a later message commits first. The queue is
 * bounded: at its limit the connection stops being read until it drains.
 *
 * Fetch barrier. While an on_message_fetch lookup for a session is running,
 * live messages for that session are queued, not sent: when the stored
 * messages arrive they go first (oldest first), then the live ones, and a
 * stored message already queued or in flight is not delivered twice. A
 * lookup that takes longer than FETCH_WAIT_MS lets live messages through.
 */
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "util/clock.h"
#include "util/log.h"

#define FETCH_WAIT_MS 5000
#define ACKQ_LIMIT 1024

static mqtt_str sv(const char *p, uint32_t n) { return (mqtt_str){(const uint8_t *)p, n}; }

static void fill_client(hook_event *ev, session *s, conn *c, char *peer, size_t plen)
{
	ev->worker = s->w->id;
	ev->serial = s->serial;
	ev->ts_ms = clock_wall_ms();
	ev->clientid = sv(s->client_id, s->cid_len);
	ev->username = sv(s->username ? s->username : "", s->ulen);
	peer[0] = 0;
	if (c) {
		conn_peer_str(c, peer, plen);
		char *colon = strrchr(peer, ':'); /* the spec's peerhost is the address alone */
		if (colon)
			*colon = 0;
	}
	ev->peerhost = sv(peer, (uint32_t)strlen(peer));
}

static bool wants(session *s, int point) { return persist_wants(s->w->b->persist, point); }

void hook_client_event(session *s, conn *c, int point)
{
	if (!wants(s, point))
		return;
	char peer[64];
	hook_event ev = {.point = (uint8_t)point};
	fill_client(&ev, s, c, peer, sizeof(peer));
	persist_fire(s->w->b->persist, &ev);
}

void hook_subscribed(session *s, mqtt_str full, uint8_t qos, bool retained)
{
	if (!wants(s, HOOK_SESSION_SUBSCRIBED))
		return;
	char peer[64];
	uint32_t fetches = 0;
	hook_event ev = {.point = HOOK_SESSION_SUBSCRIBED, .qos = qos, .topic = full,
	                 .no_retained = !retained, .fetches = &fetches};
	fill_client(&ev, s, s->c, peer, sizeof(peer));
	persist_fire(s->w->b->persist, &ev);
	if (fetches) {
		s->fetching += fetches;
		s->fetch_due_ms = worker_now(s->w) + FETCH_WAIT_MS;
	}
}

void hook_unsubscribed(session *s, mqtt_str full)
{
	if (!wants(s, HOOK_SESSION_UNSUBSCRIBED))
		return;
	char peer[64];
	hook_event ev = {.point = HOOK_SESSION_UNSUBSCRIBED, .topic = full};
	fill_client(&ev, s, s->c, peer, sizeof(peer));
	persist_fire(s->w->b->persist, &ev);
}

/* The session's filters matching topic (not shared ones: they keep no read
 * position). Returns how many were written to out. */
static uint32_t matching_filters(session *s, mqtt_str topic, mqtt_str *out, uint32_t max)
{
	uint32_t n = 0, it = 0;
	void *v;
	while (n < max && hm_next(&s->subs, &it, &v)) {
		session_sub *sub = v;
		if (sub->shared)
			continue;
		mqtt_str f = {(const uint8_t *)sub->full + sub->filter_off,
		              (uint32_t)(sub->len - sub->filter_off)};
		if (mqtt_topic_matches(f, topic))
			out[n++] = sv(sub->full, sub->len);
	}
	return n;
}

static void fire_delivery(session *s, kmq_msg *m, int point, bool implicit)
{
	persist *p = s->w->b->persist;
	char peer[64];
	mqtt_str filters[64];
	hook_event ev = {.point = (uint8_t)point, .qos = m->qos,
	                 .retain = (m->flags & MSG_F_RETAIN) != 0, .implicit = implicit,
	                 .topic = m->topic, .msg = m};
	fill_client(&ev, s, s->c, peer, sizeof(peer));
	if (persist_wants_filters(p, point)) {
		ev.filters = filters;
		ev.nfilters = matching_filters(s, m->topic, filters, 64);
	}
	persist_fire(p, &ev);
}

void hook_delivered(session *s, kmq_msg *m, uint8_t qos)
{
	if (wants(s, HOOK_MESSAGE_DELIVERED))
		fire_delivery(s, m, HOOK_MESSAGE_DELIVERED, false);
	/* a QoS 0 delivery is never acknowledged: it moves read positions
	 * (on_message_acked) when it is sent */
	if (qos == 0 && persist_wants_filters(s->w->b->persist, HOOK_MESSAGE_ACKED))
		fire_delivery(s, m, HOOK_MESSAGE_ACKED, true);
}

void hook_acked(session *s, kmq_msg *m)
{
	if (wants(s, HOOK_MESSAGE_ACKED))
		fire_delivery(s, m, HOOK_MESSAGE_ACKED, false);
}

void hook_will_published(worker *w, kmq_msg *m)
{
	persist *p = w->b->persist;
	if (!persist_wants(p, HOOK_MESSAGE_PUBLISH))
		return;
	hook_event ev = {.point = HOOK_MESSAGE_PUBLISH, .qos = m->qos,
	                 .retain = (m->flags & MSG_F_RETAIN) != 0, .worker = w->id,
	                 .ts_ms = m->ts_ms, .clientid = m->origin, .username = m->origin_user,
	                 .topic = m->topic, .msg = m};
	persist_fire(p, &ev);
}

/* ---------------------------------------------------------------- sync acks */

static void ackq_flush(session *s)
{
	conn *c = s->c;
	while (s->ackq_n && s->ackq[0].pending == 0) {
		ack_wait a = s->ackq[0];
		memmove(s->ackq, s->ackq + 1, (s->ackq_n - 1) * sizeof(ack_wait));
		s->ackq_n--;
		if (c && c->state == CONN_ACTIVE) {
			if (!a.ok && c->version != MQTT_V5) {
				/* MQTT 3 has no negative PUBACK: a PUBACK would tell the
				 * client the message is safe when it is not. Closing makes
				 * it resend the PUBLISH (and the rest it has in flight)
				 * after reconnecting. */
				log_warning("client %s: a sync write of its message failed; closing the "
				            "connection so that it resends", s->client_id);
				/* forget the rest first: closing may end (and free) the session */
				hooks_session_offline(s);
				conn_shutdown(c, MQTT_RC_UNSPECIFIED_ERROR, false);
				return;
			}
			send_ack(c, a.type, a.pid, a.ok ? 0 : MQTT_RC_UNSPECIFIED_ERROR);
		}
	}
	if (s->ackq_n == 0) {
		free(s->ackq);
		s->ackq = NULL;
		s->ackq_cap = 0;
	}
	if (c && (c->flags & CF_ACKQ_FULL) && s->ackq_n < ACKQ_LIMIT / 2) {
		c->flags &= (uint16_t)~CF_ACKQ_FULL;
		conn_read_start(c);
	}
}

void hooks_session_offline(session *s)
{
	/* the connection is gone: its acknowledgements cannot be sent (the
	 * client resends those PUBLISHes after reconnecting) */
	free(s->ackq);
	s->ackq = NULL;
	s->ackq_n = s->ackq_cap = 0;
}

int hook_publish(conn *c, kmq_msg *m, uint16_t pid, uint64_t stored_seq)
{
	session *s = c->s;
	persist *p = c->w->b->persist;
	uint8_t type = m->qos == 2 ? MQTT_PUBREC : MQTT_PUBACK;
	int n = 0;
	uint64_t seq = stored_seq;
	uint32_t extra = stored_seq ? 1 : 0; /* the state store's report */
	if (persist_wants(p, HOOK_MESSAGE_PUBLISH)) {
		char peer[64];
		hook_event ev = {.point = HOOK_MESSAGE_PUBLISH, .qos = m->qos,
		                 .retain = (m->flags & MSG_F_RETAIN) != 0, .topic = m->topic, .msg = m};
		fill_client(&ev, s, c, peer, sizeof(peer));
		ev.ts_ms = m->ts_ms;
		if (m->qos > 0 && persist_sync_publish(p))
			ev.ack_seq = seq = seq ? seq : ++s->ack_seq;
		n = persist_fire(p, &ev);
	}
	if (m->qos == 0)
		return 0;
	if (n == 0 && !extra && s->ackq_n == 0)
		return send_ack(c, type, pid, 0);
	if (s->ackq_n == s->ackq_cap) {
		uint32_t nc = s->ackq_cap ? s->ackq_cap * 2 : 8;
		ack_wait *nv = realloc(s->ackq, nc * sizeof(*nv));
		if (!nv) {
			conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
			return -1;
		}
		s->ackq = nv;
		s->ackq_cap = nc;
	}
	s->ackq[s->ackq_n++] = (ack_wait){.seq = seq, .pid = pid, .type = type,
	                                  .pending = (n > 0 ? (uint32_t)n : 0) + extra,
	                                  .ok = n >= 0};
	if (s->ackq_n >= ACKQ_LIMIT && !(c->flags & CF_ACKQ_FULL)) {
		c->flags |= CF_ACKQ_FULL;
		conn_read_stop(c);
	}
	ackq_flush(s);
	/* a failed write of an MQTT 3 client closes its connection */
	return c->state == CONN_ACTIVE ? 0 : -1;
}

/* ---------------------------------------------------------------- answers */

typedef struct ack_answer {
	uint64_t serial, seq;
	bool ok;
	uint32_t cid_len;
	char cid[];
} ack_answer;

static session *find_session(worker *w, const char *cid, uint32_t len, uint64_t serial)
{
	session *s = hm_get(&w->sessions, cid, len);
	return s && s->serial == serial ? s : NULL;
}

static void apply_ack(worker *w, void *arg)
{
	ack_answer *a = arg;
	if (!w) {
		free(a);
		return;
	}
	session *s = find_session(w, a->cid, a->cid_len, a->serial);
	if (s) {
		for (uint32_t i = 0; i < s->ackq_n; i++) {
			if (s->ackq[i].seq != a->seq)
				continue;
			if (s->ackq[i].pending)
				s->ackq[i].pending--;
			s->ackq[i].ok &= a->ok;
			break;
		}
		ackq_flush(s);
	}
	free(a);
}

static void post(broker *b, unsigned worker_id, void (*fn)(worker *, void *), void *arg)
{
	if (worker_id >= b->nworkers) {
		free(arg);
		return;
	}
	inbox_item *it = calloc(1, sizeof(*it));
	if (!it) {
		log_error("out of memory posting a backend answer");
		fn(NULL, arg); /* fn frees arg when given no worker */
		return;
	}
	it->kind = INBOX_CALL;
	it->fn = fn;
	it->arg = arg;
	worker_post_external(&b->workers[worker_id], it);
}

static void host_ack_done(void *ctx, unsigned worker_id, const char *cid, uint32_t len,
                          uint64_t serial, uint64_t seq, bool ok)
{
	broker *b = ctx;
	ack_answer *a = malloc(sizeof(*a) + len);
	if (!a)
		return; /* the client's PUBACK never comes; it resends after reconnecting */
	a->serial = serial;
	a->seq = seq;
	a->ok = ok;
	a->cid_len = len;
	memcpy(a->cid, cid, len);
	post(b, worker_id, apply_ack, a);
}

/* Subscribes a session to its stored subscriptions, as a SUBSCRIBE would. */
static void apply_subs(session *s, presult *r)
{
	const broker_config *cfg = s->w->b->cfg;
	for (uint32_t i = 0; i < r->n; i++) {
		psub *p = &r->subs[i];
		mqtt_str full = {(const uint8_t *)p->topic, p->len}, group, filter = full;
		int sh = mqtt_shared_parse(full, &group, &filter);
		if (sh < 0 || !mqtt_topic_filter_valid(filter) || memchr(p->topic, 0, p->len) ||
		    !mqtt_utf8_valid(full.p, full.len) ||
		    mqtt_topic_levels(filter) > (uint32_t)cfg->max_topic_levels ||
		    (sh == 1 && !cfg->shared_subscription)) {
			log_warning("client %s: stored subscription \"%.*s\" is not a valid filter; "
			            "skipped", s->client_id, (int)(p->len > 200 ? 200 : p->len), p->topic);
			continue;
		}
		if (s->subs.count >= (uint64_t)cfg->max_subscriptions && !hm_get(&s->subs, full.p, full.len))
			break;
		int acl = authz_filter(s, filter);
		if (acl == ACL_FILTER_DENY)
			continue;
		uint8_t qos = p->qos > cfg->max_qos_allowed ? (uint8_t)cfg->max_qos_allowed : p->qos;
		uint8_t opts = qos | (acl == ACL_FILTER_PARTIAL ? SUBOPT_ACL_CHECK : 0);
		bool is_new;
		if (session_subscribe(s, full, opts, 0, &is_new))
			continue;
		bool retained = is_new && sh != 1 && cfg->retain_available;
		hook_subscribed(s, full, qos, retained);
		if (retained)
			route_retained(s, filter, opts, 0);
	}
}

typedef struct has_ctx {
	bool found;
} has_ctx;

static void note_found(void *ctx, kmq_msg *m) { ((has_ctx *)ctx)->found = true; }

/* Retained messages from a backend that the broker's own store does not
 * hold (the broker's store was delivered at SUBACK and is authoritative). */
static void apply_retained(session *s, presult *r)
{
	session_sub *sub = hm_get(&s->subs, r->filter, r->filter_len);
	if (!sub || sub->shared)
		return; /* no retained messages for shared subscriptions (MQTT 5, 4.8.2) */
	broker *b = s->w->b;
	uint8_t sq = sub->options & MQTT_SUBOPT_QOS_MASK;
	for (uint32_t i = 0; i < r->n; i++) {
		kmq_msg *m = r->msgs[i];
		has_ctx h = {false};
		retain_match(&b->retained, m->topic, clock_wall_ms(), note_found, &h);
		if (h.found)
			continue;
		if ((sub->options & SUBOPT_ACL_CHECK) && !authz_may_receive(s, m->topic))
			continue;
		session_deliver(s, m, m->qos < sq ? m->qos : sq, DLV_RETAIN,
		                sub->sub_id ? &sub->sub_id : NULL, sub->sub_id ? 1 : 0);
	}
}

static void apply_result(worker *w, void *arg)
{
	presult *r = arg;
	if (!w) {
		persist_result_free(&r);
		return;
	}
	session *s = find_session(w, r->clientid, r->cid_len, r->serial);
	if (s) {
		switch (r->kind) {
		case PRESULT_SUBS: apply_subs(s, r); break;
		case PRESULT_MSGS: session_deliver_fetched(s, r->filter, r->filter_len, r->msgs, r->n);
			break;
		case PRESULT_RETAINED: apply_retained(s, r); break;
		}
	}
	persist_result_free(&r);
}

/* A command from outside (the Redis subscription channel) for a client id:
 * applied if the client is online on this broker, dropped otherwise (the
 * backend stores it for the next connection if it is configured to). */
static void apply_command(worker *w, void *arg)
{
	presult *r = arg;
	if (!w) {
		persist_result_free(&r);
		return;
	}
	session *s = hm_get(&w->sessions, r->clientid, r->cid_len);
	if (s && s->c) {
		if (r->kind == PRESULT_SUBS) {
			apply_subs(s, r);
		} else if (r->kind == PRESULT_UNSUBS) {
			for (uint32_t i = 0; i < r->n; i++) {
				mqtt_str full = {(const uint8_t *)r->subs[i].topic, r->subs[i].len};
				if (session_unsubscribe(s, full) == 0)
					hook_unsubscribed(s, full);
			}
		}
	}
	persist_result_free(&r);
}

static void host_command(void *ctx, presult *r)
{
	broker *b = ctx;
	if (!r->clientid) {
		persist_result_free(&r);
		return;
	}
	unsigned owner = broker_owner(b, r->clientid, r->cid_len);
	inbox_item *it = calloc(1, sizeof(*it));
	if (!it) {
		persist_result_free(&r);
		return;
	}
	it->kind = INBOX_CALL;
	it->fn = apply_command;
	it->arg = r;
	worker_post_external(&b->workers[owner], it);
}

static void host_result(void *ctx, presult *r)
{
	broker *b = ctx;
	if (r->worker >= b->nworkers) {
		persist_result_free(&r);
		return;
	}
	inbox_item *it = calloc(1, sizeof(*it));
	if (!it) {
		persist_result_free(&r);
		return;
	}
	it->kind = INBOX_CALL;
	it->fn = apply_result;
	it->arg = r;
	worker_post_external(&b->workers[r->worker], it);
}

void hooks_host_init(broker *b)
{
	b->phost = (persist_host){
		.ctx = b,
		.ack_done = host_ack_done,
		.result = host_result,
		.command = host_command,
		.node = b->cfg->node_name,
	};
}
