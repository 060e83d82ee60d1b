/*
 * store.c - the broker's side of the state store (persist/state.h): what
 * changes of session state are written, and how they are read back at start.
 *
 * What is written. Only persistent sessions (session expiry > 0) are stored:
 * the session row (re-written at CONNECT and when it goes offline, so expiry
 * after a restart counts from the real disconnect), its subscriptions, and
 * every QoS 1/2 delivery from the moment it is queued or sent until it is
 * acknowledged or dropped. A delivery gets a per-session sequence number
 * (delivery.sseq) that names its row. QoS 2 deliveries also record their
 * packet id when sent and when PUBREC arrives, so after a restart the client
 * gets the same packet id again (DUP) or the PUBREL it is waiting for, and
 * exactly-once holds across the restart. Retained messages are written as
 * broker_publish sets them.
 *
 * Sync mode. A client's QoS 1/2 PUBLISH gets a token before it is routed
 * (store_publish_begin); every stored delivery and retained write made while
 * routing, here or on other workers (the inbox items carry a hold), holds
 * it until its transaction commits. If nothing was held once routing on
 * this worker is over, no write was needed and the PUBACK goes at once.
 *
 * At start (store_restore, before the workers run) sessions are rebuilt on
 * their owner workers, offline, with their expiry counting from when they
 * went offline; expired ones are deleted. Restored deliveries that had been
 * sent go back into the in-flight window with their packet ids; the others
 * into the queue. Nothing read back is written back (b->restoring).
 */
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "util/clock.h"
#include "util/log.h"

static bool active(const broker *b) { return b->state && !b->restoring && state_enabled(b->state); }

static void submit(broker *b, state_op *op)
{
	if (op)
		state_submit(b->state, op);
}

/* Writes the session row. */
static void put_session(session *s, bool online)
{
	broker *b = s->w->b;
	state_op *op = state_op_new(SOP_SESSION_PUT, s->client_id, s->cid_len, s->username,
	                            s->username ? s->ulen : 0);
	if (!op)
		return;
	op->version = s->version;
	op->expiry_s = s->expiry_s;
	op->offline_ms = online ? 0 : clock_wall_ms();
	op->flags = s->username != NULL;
	submit(b, op);
}

void store_sub_put(session *s, mqtt_str full, uint8_t options, uint32_t sub_id)
{
	if (!s->stored || !active(s->w->b))
		return;
	state_op *op = state_op_new(SOP_SUB_PUT, s->client_id, s->cid_len, full.p, full.len);
	if (!op)
		return;
	op->flags = options;
	op->sub_id = sub_id;
	submit(s->w->b, op);
}

void store_sub_del(session *s, mqtt_str full)
{
	if (!s->stored || !active(s->w->b))
		return;
	submit(s->w->b, state_op_new(SOP_SUB_DEL, s->client_id, s->cid_len, full.p, full.len));
}

static uint64_t add_msg(session *s, kmq_msg *m, uint8_t qos, uint8_t flags, uint32_t sub_id,
                        state_tok *tok)
{
	state_op *op = state_op_new(SOP_MSG_ADD, s->client_id, s->cid_len, NULL, 0);
	if (!op)
		return 0;
	op->seq = ++s->store_seq;
	op->msg = msg_ref(m);
	op->qos = qos;
	op->flags = flags & DLV_RETAIN;
	op->sub_id = sub_id;
	if (tok)
		op->tok = state_tok_hold(tok);
	uint64_t seq = op->seq;
	submit(s->w->b, op);
	return seq;
}

uint64_t store_msg_add(session *s, kmq_msg *m, uint8_t qos, uint8_t flags, uint32_t sub_id)
{
	if (!s->stored || qos == 0 || !active(s->w->b))
		return 0;
	return add_msg(s, m, qos, flags, sub_id, s->w->route_tok);
}

void store_msg_pid(session *s, uint64_t sseq, uint16_t pid, uint8_t mstate)
{
	if (!sseq || !s->stored || !active(s->w->b))
		return;
	state_op *op = state_op_new(SOP_MSG_PID, s->client_id, s->cid_len, NULL, 0);
	if (!op)
		return;
	op->seq = sseq;
	op->pid = pid;
	op->mstate = mstate;
	submit(s->w->b, op);
}

void store_msg_del(session *s, uint64_t sseq, const uint8_t msgid[16])
{
	if (!sseq || !s->stored || !active(s->w->b))
		return;
	state_op *op = state_op_new(SOP_MSG_DEL, s->client_id, s->cid_len, msgid, 16);
	if (!op)
		return;
	op->seq = sseq;
	submit(s->w->b, op);
}

/* Writes every subscription and every QoS 1/2 delivery of a session that has
 * just become stored. */
static void put_contents(session *s)
{
	uint32_t it = 0;
	void *v;
	while (hm_next(&s->subs, &it, &v)) {
		session_sub *sub = v;
		store_sub_put(s, (mqtt_str){(const uint8_t *)sub->full, sub->len}, sub->options,
		              sub->sub_id);
	}
	dq *qs[2] = {&s->inflight, &s->queue};
	for (int k = 0; k < 2; k++) {
		dq *q = qs[k];
		for (uint32_t i = 0; i < q->n; i++) {
			delivery *d = dq_at(q, i);
			if (d->qos == 0 || d->sseq)
				continue;
			d->sseq = add_msg(s, d->msg, d->qos, d->flags, d->sub_id, NULL);
			if (d->sseq && d->qos == 2 && d->pid && k == 0)
				store_msg_pid(s, d->sseq, d->pid, (d->flags & DLV_PUBREL) ? 2 : 1);
		}
	}
}

static void forget_seqs(dq *q)
{
	for (uint32_t i = 0; i < q->n; i++)
		dq_at(q, i)->sseq = 0;
}

void store_session_sync(session *s, bool online)
{
	broker *b = s->w->b;
	if (!active(b))
		return;
	if (s->persistent) {
		bool first = !s->stored;
		s->stored = true;
		put_session(s, online);
		if (first)
			put_contents(s);
	} else if (s->stored) {
		store_session_del(s);
	}
}

void store_session_del(session *s)
{
	if (!s->stored)
		return;
	s->stored = false;
	forget_seqs(&s->queue);
	forget_seqs(&s->inflight);
	if (!active(s->w->b) || s->w->stopping)
		return;
	submit(s->w->b, state_op_new(SOP_SESSION_DEL, s->client_id, s->cid_len, NULL, 0));
}

void store_retain(worker *w, kmq_msg *m)
{
	broker *b = w->b;
	if (!active(b) || (m->flags & MSG_F_SYS))
		return;
	state_op *op;
	if (m->payload.len == 0) {
		op = state_op_new(SOP_RETAIN_DEL, "", 0, m->topic.p, m->topic.len);
	} else {
		op = state_op_new(SOP_RETAIN_PUT, "", 0, NULL, 0);
		if (op)
			op->msg = msg_ref(m);
	}
	if (!op)
		return;
	if (w->route_tok)
		op->tok = state_tok_hold(w->route_tok);
	submit(b, op);
}

/* ---------------------------------------------------------------- sync tokens */

void store_publish_begin(conn *c, kmq_msg *m)
{
	worker *w = c->w;
	broker *b = w->b;
	w->route_tok = NULL;
	if (m->qos == 0 || !active(b) || !state_sync(b->state))
		return;
	session *s = c->s;
	w->route_tok = state_tok_new(b->state, w->id, s->serial, s->ack_seq + 1, s->client_id,
	                             s->cid_len);
	if (w->route_tok)
		s->ack_seq++;
}

uint64_t store_publish_end(worker *w)
{
	state_tok *t = w->route_tok;
	w->route_tok = NULL;
	if (!t)
		return 0;
	if (state_tok_alone(t)) {
		/* nothing was stored: no acknowledgement to wait for */
		state_tok_discard(&t);
		return 0;
	}
	uint64_t seq = state_tok_seq(t);
	state_tok_release(w->b->state, &t, true);
	return seq;
}

void store_tok_release(broker *b, state_tok **t)
{
	if (*t)
		state_tok_release(b->state, t, true);
}

/* ---------------------------------------------------------------- restore */

typedef struct restore_ctx {
	broker *b;
	uint64_t now_wall;
	uint64_t sessions, subs, msgs, retained, expired, over_limit;
} restore_ctx;

static session *find(broker *b, const char *cid, uint32_t len)
{
	worker *w = &b->workers[broker_owner(b, cid, len)];
	return hm_get(&w->sessions, cid, len);
}

static int on_session(void *arg, const state_session *ss)
{
	restore_ctx *r = arg;
	broker *b = r->b;
	if (!ss->cid_len || ss->cid_len > 65535 || !ss->expiry_s)
		return -1;
	uint64_t since = ss->offline_ms ? ss->offline_ms : r->now_wall;
	uint64_t left_ms = UINT64_MAX;
	if (ss->expiry_s != UINT32_MAX) {
		uint64_t end = since + (uint64_t)ss->expiry_s * 1000u;
		if (end <= r->now_wall) {
			r->expired++;
			return -1;
		}
		left_ms = end - r->now_wall;
	}
	worker *w = &b->workers[broker_owner(b, ss->cid, ss->cid_len)];
	session *s = session_new(w, (mqtt_str){(const uint8_t *)ss->cid, ss->cid_len});
	if (!s)
		return -1;
	s->version = ss->version;
	s->expiry_s = ss->expiry_s;
	s->persistent = true;
	s->stored = true;
	STAT_ADD(w, sessions_persistent, 1);
	if (ss->username) {
		s->username = malloc(ss->ulen + 1);
		if (s->username) {
			memcpy(s->username, ss->username, ss->ulen);
			s->username[ss->ulen] = 0;
			s->ulen = ss->ulen;
		}
	}
	session_restored(s, left_ms);
	r->sessions++;
	return 0;
}

static int on_sub(void *arg, const char *cid, uint32_t cl, const char *f, uint32_t fl,
                  uint8_t options, uint32_t sub_id)
{
	restore_ctx *r = arg;
	session *s = find(r->b, cid, cl);
	mqtt_str full = {(const uint8_t *)f, fl}, group, filter = full;
	if (!s || fl == 0 || fl > 65535 || mqtt_shared_parse(full, &group, &filter) < 0 ||
	    !mqtt_topic_filter_valid(filter))
		return -1;
	bool is_new;
	if (session_subscribe(s, full, options, sub_id, &is_new))
		return -1;
	r->subs++;
	return 0;
}

static int on_queued(void *arg, const state_queued *q)
{
	restore_ctx *r = arg;
	kmq_msg *m = q->msg;
	session *s = find(r->b, q->cid, q->cid_len);
	if (!s || q->qos == 0 || q->qos > 2) {
		msg_unref(&m);
		return -1;
	}
	/* the queue limit holds after a restart too (it may have been lowered):
	 * the newest beyond it are dropped, as mqtt.mqueue_drop = drop_newest */
	if (!q->mstate && s->queue.n >= (uint64_t)r->b->cfg->max_mqueue_len) {
		msg_unref(&m);
		r->over_limit++;
		return -1;
	}
	if (q->seq > s->store_seq)
		s->store_seq = q->seq;
	int rc = session_restore_delivery(s, m, q->qos, q->flags, q->sub_id, q->seq, q->pid,
	                                  q->mstate);
	msg_unref(&m);
	if (rc == 0)
		r->msgs++;
	return rc;
}

static int on_retained(void *arg, kmq_msg *m)
{
	restore_ctx *r = arg;
	int rc = -1;
	if (!msg_expired(m, r->now_wall) && m->payload.len &&
	    retain_set(&r->b->retained, m) == 0) {
		r->retained++;
		rc = 0;
	}
	msg_unref(&m);
	return rc;
}

int store_restore(broker *b)
{
	if (!b->state || !state_enabled(b->state))
		return 0;
	restore_ctx r = {.b = b, .now_wall = clock_wall_ms()};
	state_loader l = {.arg = &r, .session = on_session, .sub = on_sub, .queued = on_queued,
	                  .retained = on_retained};
	char err[400] = "";
	b->restoring = true;
	int rc = state_open_load(b->state, &l, err, sizeof(err));
	b->restoring = false;
	if (rc) {
		log_error("%s", err);
		return -1;
	}
	if (r.over_limit)
		log_warning("state store: %llu stored messages dropped: their sessions' queues are "
		            "full (mqtt.max_mqueue_len)",
		            (unsigned long long)r.over_limit);
	log_notice("state store: restored %llu sessions, %llu subscriptions, %llu queued messages, "
	           "%llu retained messages (%llu expired sessions removed)",
	           (unsigned long long)r.sessions, (unsigned long long)r.subs,
	           (unsigned long long)r.msgs, (unsigned long long)r.retained,
	           (unsigned long long)r.expired);
	return 0;
}
