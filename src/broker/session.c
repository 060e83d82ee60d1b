/*
 * session.c - MQTT session state: subscriptions, the outgoing queue and
 * in-flight window, incoming QoS 2 state, the will, and expiry.
 *
 * Delivery model. Every message for a session is a `delivery` (message
 * reference + effective QoS + flags + subscription ids). QoS 1/2 deliveries
 * enter the in-flight window (bounded by the smaller of mqtt.max_inflight and
 * the client's Receive Maximum) with a packet id, in order; the rest wait in
 * the queue (bounded by mqtt.max_mqueue_len, with a drop policy). QoS 0
 * deliveries bypass the queue when it is empty and the socket is keeping up,
 * and otherwise queue behind earlier messages so a client sees one publisher's
 * messages in order. Acks free window slots and pump the queue.
 *
 * Offline. When the connection goes, in-flight deliveries stay (to be resent
 * with DUP on reconnect, in order, before anything queued; if the client now
 * allows fewer in flight, the rest keep their ids and follow as acks come)
 * and new messages queue. The will is published at once or after its delay; the session is
 * destroyed at once (expiry 0) or when its expiry timer fires.
 *
 * Everything here runs on the session's owner worker.
 */
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "util/clock.h"
#include "util/log.h"

/* ---------------------------------------------------------------- delivery queue */

static void dlv_release(delivery *d)
{
	msg_unref(&d->msg);
	free(d->more_ids);
	d->more_ids = NULL;
}

/* A delivery leaves the session for good (acknowledged, dropped, expired):
 * its stored row goes too. (Deliveries freed with the session or at
 * shutdown use dlv_release: their rows stay, or go with the session's.) */
static void dlv_finish(session *s, delivery *d)
{
	if (d->sseq) {
		store_msg_del(s, d->sseq, d->msg->id);
		d->sseq = 0;
	}
	dlv_release(d);
}

static int dq_push(dq *q, delivery *d)
{
	if (q->n == q->cap) {
		uint32_t nc = q->cap ? q->cap * 2 : 4;
		delivery *nv = malloc(nc * sizeof(*nv));
		if (!nv)
			return -1;
		for (uint32_t i = 0; i < q->n; i++)
			nv[i] = q->v[(q->head + i) & (q->cap - 1)];
		free(q->v);
		q->v = nv;
		q->cap = nc;
		q->head = 0;
	}
	q->v[(q->head + q->n) & (q->cap - 1)] = *d;
	q->n++;
	return 0;
}


static delivery dq_pop(dq *q)
{
	delivery d = q->v[q->head];
	q->head = (q->head + 1) & (q->cap - 1);
	q->n--;
	if (q->n == 0)
		q->head = 0;
	return d;
}

/* Removes entry i keeping the order of the others. */
static delivery dq_remove_at(dq *q, uint32_t i)
{
	delivery d = *dq_at(q, i);
	for (uint32_t j = i; j + 1 < q->n; j++)
		*dq_at(q, j) = *dq_at(q, j + 1);
	q->n--;
	if (q->n == 0)
		q->head = 0;
	return d;
}

void dq_free(dq *q)
{
	while (q->n) {
		delivery d = dq_pop(q);
		dlv_release(&d);
	}
	free(q->v);
	q->v = NULL;
	q->cap = q->head = 0;
}

/* Large queues that emptied give their memory back. */
static void dq_trim(dq *q)
{
	if (q->n == 0 && q->cap > 64) {
		free(q->v);
		q->v = NULL;
		q->cap = q->head = 0;
	}
}

/* ---------------------------------------------------------------- lifecycle */

static hm_key sub_key(const void *v)
{
	const session_sub *s = v;
	return (hm_key){s->full, s->len};
}

session *session_new(worker *w, mqtt_str cid)
{
	session *s = calloc(1, sizeof(*s) + cid.len + 1);
	if (!s)
		return NULL;
	s->w = w;
	s->serial = ++w->next_serial;
	s->cid_len = cid.len;
	memcpy(s->client_id, cid.p, cid.len);
	hm_init(&s->subs, sub_key);
	void *old;
	if (hm_put(&w->sessions, s, &old)) {
		free(s);
		return NULL;
	}
	STAT_ADD(w, sessions, 1);
	return s;
}

static void timer_closed(uv_handle_t *h) { free(h); }

static void timer_stop(session *s)
{
	if (s->timer) {
		uv_close((uv_handle_t *)s->timer, timer_closed);
		s->timer = NULL;
	}
}

void session_publish_will(session *s)
{
	kmq_msg *will = s->will;
	if (!will)
		return;
	s->will = NULL;
	s->will_due_ms = 0;
	/* the will gets a fresh time: its expiry counts from publication */
	hook_will_published(s->w, will);
	broker_publish(s->w, will);
	msg_unref(&will);
}

void session_destroy(session **sp)
{
	session *s = *sp;
	if (!s)
		return;
	*sp = NULL;
	worker *w = s->w;
	timer_stop(s);
	/* a session that ends publishes a will still waiting for its delay */
	if (s->will && !w->stopping)
		session_publish_will(s);
	msg_unref(&s->will);
	store_session_del(s);
	session_unsubscribe_all(s);
	hm_free(&s->subs);
	dq_free(&s->queue);
	dq_free(&s->inflight);
	free(s->awaiting);
	free(s->ackq);
	free(s->username);
	hm_remove(&w->sessions, s->client_id, s->cid_len);
	STAT_ADD(w, sessions, -1);
	if (s->persistent)
		STAT_ADD(w, sessions_persistent, -1);
	free(s);
}

static void arm_timer(session *s);

static void on_timer(uv_timer_t *t)
{
	session *s = t->data;
	uint64_t now = worker_now(s->w);
	if (s->will && s->will_due_ms && now >= s->will_due_ms)
		session_publish_will(s);
	if (s->expiry_due_ms && now >= s->expiry_due_ms) {
		log_debug("session %s expired", s->client_id);
		session_destroy(&s);
		return;
	}
	arm_timer(s);
}

/* (Re)arms the timer for the earliest of the will and expiry deadlines. */
static void arm_timer(session *s)
{
	uint64_t due = 0;
	if (s->will && s->will_due_ms)
		due = s->will_due_ms;
	if (s->expiry_due_ms && (!due || s->expiry_due_ms < due))
		due = s->expiry_due_ms;
	if (!due) {
		timer_stop(s);
		return;
	}
	if (!s->timer) {
		s->timer = malloc(sizeof(*s->timer));
		if (!s->timer)
			return; /* the session then lives until the next reconnect or shutdown */
		uv_timer_init(&s->w->loop, s->timer);
		s->timer->data = s;
	}
	uint64_t now = worker_now(s->w);
	uv_timer_start(s->timer, on_timer, due > now ? due - now : 0, 0);
}

static void set_members_online(session *s, bool online)
{
	uint32_t it = 0;
	void *v;
	while (hm_next(&s->subs, &it, &v)) {
		session_sub *sub = v;
		if (sub->shared)
			shared_set_online(sub->shared, online);
	}
}

void session_attach(session *s, conn *c)
{
	s->c = c;
	c->s = s;
	s->expiry_due_ms = 0;
	s->will_due_ms = 0;
	arm_timer(s);
	set_members_online(s, true);
	session_resend_inflight(s);
	session_pump(s);
}

void session_detach(session *s, uint8_t rc, bool publish_will)
{
	worker *w = s->w;
	s->c = NULL;
	hooks_session_offline(s);
	set_members_online(s, false);
	/* everything in flight was sent at least once: DUP when resent */
	for (uint32_t i = 0; i < s->inflight.n; i++)
		dq_at(&s->inflight, i)->flags |= DLV_DUP;
	uint64_t now = worker_now(w);
	if (s->will) {
		if (!publish_will) {
			msg_unref(&s->will);
		} else if (s->version == MQTT_V5 && s->will_delay_s && s->expiry_s) {
			uint32_t delay = s->will_delay_s < s->expiry_s ? s->will_delay_s : s->expiry_s;
			s->will_due_ms = now + (uint64_t)delay * 1000u;
		} else {
			session_publish_will(s);
		}
	}
	if (!s->expiry_s) {
		session_destroy(&s);
		return;
	}
	if (s->expiry_s != UINT32_MAX)
		s->expiry_due_ms = now + (uint64_t)s->expiry_s * 1000u;
	arm_timer(s);
	store_session_sync(s, false); /* offline since now: expiry counts from here */
}

void session_restored(session *s, uint64_t left_ms)
{
	if (left_ms != UINT64_MAX)
		s->expiry_due_ms = worker_now(s->w) + left_ms;
	arm_timer(s);
}

int session_restore_delivery(session *s, kmq_msg *m, uint8_t qos, uint8_t flags, uint32_t sub_id,
                             uint64_t sseq, uint16_t pid, uint8_t mstate)
{
	delivery d = {.msg = msg_ref(m), .sseq = sseq, .qos = qos,
	              .flags = (uint8_t)(flags & DLV_RETAIN), .sub_id = sub_id};
	if (mstate && pid) {
		/* it was sent: the same packet id again, with DUP, or the PUBREL */
		d.pid = pid;
		d.flags |= DLV_DUP;
		if (mstate == 2)
			d.flags |= DLV_PUBREL;
		if (dq_push(&s->inflight, &d) == 0)
			return 0;
	} else if (dq_push(&s->queue, &d) == 0) {
		return 0;
	}
	dlv_release(&d);
	return -1;
}

void session_detach_for_takeover(session *s, bool clean_start)
{
	if (s->c)
		s->c->s = NULL;
	s->c = NULL;
	hooks_session_offline(s);
	set_members_online(s, false);
	for (uint32_t i = 0; i < s->inflight.n; i++)
		dq_at(&s->inflight, i)->flags |= DLV_DUP;
	/* The old connection ended without DISCONNECT. Its will goes out now
	 * unless it has a delay and the session continues: a new connection to
	 * the session within the delay means no will (MQTT 5, 3.1.3.2.2). */
	if (s->will) {
		if (clean_start || s->version != MQTT_V5 || !s->will_delay_s)
			session_publish_will(s);
		else
			msg_unref(&s->will);
	}
}

void session_set_will(session *s, kmq_msg *will, uint32_t delay_s)
{
	msg_unref(&s->will);
	s->will = will;
	s->will_delay_s = delay_s;
	s->will_due_ms = 0;
}

/* ---------------------------------------------------------------- sending */

static uint16_t next_pid(session *s)
{
	for (;;) {
		s->next_pid = (uint16_t)(s->next_pid == 65535 ? 1 : s->next_pid + 1);
		bool used = false;
		for (uint32_t i = 0; i < s->inflight.n; i++) {
			if (dq_at(&s->inflight, i)->pid == s->next_pid) {
				used = true;
				break;
			}
		}
		if (!used)
			return s->next_pid;
	}
}

static void count_drop(worker *w, _Atomic uint64_t *reason)
{
	atomic_store_explicit(reason, atomic_load_explicit(reason, memory_order_relaxed) + 1,
	                      memory_order_relaxed);
	STAT_INC(w, msgs_dropped);
}

/* Queues d, applying the length limit. Takes ownership of d. */
static void enqueue(session *s, delivery *d)
{
	worker *w = s->w;
	const broker_config *cfg = w->b->cfg;
	if (s->queue.n >= (uint64_t)cfg->max_mqueue_len) {
		count_drop(w, &w->st.dropped_queue_full);
		if (cfg->mqueue_drop == MQUEUE_DROP_NEWEST) {
			dlv_finish(s, d);
			return;
		}
		delivery old = dq_pop(&s->queue);
		dlv_finish(s, &old);
	}
	if (dq_push(&s->queue, d)) {
		count_drop(w, &w->st.dropped_queue_full);
		dlv_finish(s, d);
	}
}

/* Puts d (QoS > 0) into the window and on the wire. Takes ownership. */
static void send_inflight(session *s, delivery *d)
{
	d->pid = next_pid(s);
	if (dq_push(&s->inflight, d)) {
		count_drop(s->w, &s->w->st.dropped_queue_full);
		dlv_finish(s, d);
		return;
	}
	delivery *in = dq_at(&s->inflight, s->inflight.n - 1);
	int r = send_publish(s->c, in);
	if (r == 0) {
		if (in->qos == 2)
			store_msg_pid(s, in->sseq, in->pid, 1);
		hook_delivered(s, in->msg, in->qos);
	}
	if (r == 1) {
		/* larger than the client accepts: discarded, and as the spec
		 * says, treated as if it had been delivered */
		count_drop(s->w, &s->w->st.dropped_too_large);
		delivery gone = dq_remove_at(&s->inflight, s->inflight.n - 1);
		dlv_finish(s, &gone);
	}
}

static void send_qos0(session *s, delivery *d)
{
	int r = send_publish(s->c, d);
	if (r == 0)
		hook_delivered(s, d->msg, 0);
	else if (r == 1)
		count_drop(s->w, &s->w->st.dropped_too_large);
	dlv_release(d);
}

/* A fetch that takes too long stops holding live messages back. */
static bool fetch_wait_over(session *s)
{
	if (worker_now(s->w) < s->fetch_due_ms)
		return false;
	log_debug("client %s: stored messages are late; delivering live ones", s->client_id);
	s->fetching = 0;
	return true;
}

static bool slow_reader(const session *s)
{
	return conn_pending_bytes(s->c) > s->w->b->cfg->max_pending_bytes;
}

void session_deliver(session *s, kmq_msg *msg, uint8_t qos, uint8_t flags, const uint32_t *ids,
                     uint16_t nids)
{
	worker *w = s->w;
	const broker_config *cfg = w->b->cfg;
	if ((msg->flags & MSG_F_EXPIRY) && msg_expired(msg, clock_wall_ms())) {
		count_drop(w, &w->st.dropped_expired);
		return;
	}
	delivery d = {.msg = msg, .qos = qos, .flags = flags};
	if (nids) {
		d.sub_id = ids[0];
		if (nids > 1) {
			d.more_ids = malloc((nids - 1) * sizeof(uint32_t));
			if (d.more_ids) {
				memcpy(d.more_ids, ids + 1, (nids - 1) * sizeof(uint32_t));
				d.n_more = (uint16_t)(nids - 1);
			}
		}
	}
	msg_ref(msg);
	if (qos && s->stored)
		d.sseq = store_msg_add(s, msg, qos, flags, d.sub_id);
	conn *c = s->c;
	if (!c || c->state != CONN_ACTIVE) {
		if (qos == 0 && !cfg->mqueue_store_qos0) {
			count_drop(w, &w->st.dropped_no_session);
			dlv_release(&d);
			return;
		}
		enqueue(s, &d);
		return;
	}
	/* more in flight than the window: some wait to be resent (see
	 * send_unsent_inflight), and nothing may overtake them; nor may a live
	 * message overtake stored ones being fetched */
	if (s->fetching && !fetch_wait_over(s)) {
		enqueue(s, &d);
		return;
	}
	if (s->queue.n || s->inflight.n > s->window) {
		enqueue(s, &d);
		return;
	}
	if (qos == 0) {
		if (slow_reader(s)) {
			count_drop(w, &w->st.dropped_slow_reader);
			dlv_release(&d);
			return;
		}
		send_qos0(s, &d);
		return;
	}
	if (s->inflight.n < s->window)
		send_inflight(s, &d);
	else
		enqueue(s, &d);
}

void session_pump(session *s)
{
	conn *c = s->c;
	if (!c || c->state != CONN_ACTIVE)
		return;
	if (s->fetching && !fetch_wait_over(s))
		return;
	uint64_t now = 0;
	while (s->queue.n && s->inflight.n <= s->window) {
		delivery *d = dq_at(&s->queue, 0);
		if (d->msg->flags & MSG_F_EXPIRY) {
			if (!now)
				now = clock_wall_ms();
			if (msg_expired(d->msg, now)) {
				delivery gone = dq_pop(&s->queue);
				count_drop(s->w, &s->w->st.dropped_expired);
				dlv_finish(s, &gone);
				continue;
			}
		}
		if (d->qos == 0) {
			if (slow_reader(s))
				break;
			delivery x = dq_pop(&s->queue);
			send_qos0(s, &x);
		} else {
			if (s->inflight.n >= s->window)
				break;
			delivery x = dq_pop(&s->queue);
			send_inflight(s, &x);
		}
		if (c->state != CONN_ACTIVE)
			return;
	}
	dq_trim(&s->queue);
}

/* Sends the in-flight deliveries not yet sent on the current connection,
 * among the first `window` (a client may reconnect with a smaller Receive
 * Maximum than its session has in flight: the rest wait, keeping their
 * packet ids, until acks make room). */
static void send_unsent_inflight(session *s)
{
	conn *c = s->c;
	for (uint32_t i = 0; i < s->inflight.n && i < s->window && c->state == CONN_ACTIVE;) {
		delivery *d = dq_at(&s->inflight, i);
		if (d->flags & DLV_SENT) {
			i++;
			continue;
		}
		if (d->flags & DLV_PUBREL) {
			send_ack(c, MQTT_PUBREL, d->pid, 0);
			d->flags |= DLV_SENT;
			i++;
			continue;
		}
		if (send_publish(c, d) == 1) {
			count_drop(s->w, &s->w->st.dropped_too_large);
			delivery gone = dq_remove_at(&s->inflight, i);
			dlv_finish(s, &gone);
			continue;
		}
		i++;
	}
}

void session_resend_inflight(session *s)
{
	for (uint32_t i = 0; i < s->inflight.n; i++)
		dq_at(&s->inflight, i)->flags &= (uint8_t)~DLV_SENT;
	send_unsent_inflight(s);
}

int session_ack(session *s, uint16_t pid, uint8_t type, uint8_t rc)
{
	uint32_t i;
	delivery *d = NULL;
	for (i = 0; i < s->inflight.n; i++) {
		d = dq_at(&s->inflight, i);
		if (d->pid == pid)
			break;
	}
	bool found = i < s->inflight.n;
	switch (type) {
	case MQTT_PUBACK:
		if (!found || d->qos != 1)
			return -1;
		hook_acked(s, d->msg);
		break;
	case MQTT_PUBREC:
		if (!found || d->qos != 2 || (d->flags & DLV_PUBREL)) {
			/* unknown id: answer so the client can finish its state */
			if (s->c)
				send_ack(s->c, MQTT_PUBREL, pid,
				         found ? 0 : MQTT_RC_PACKET_IDENTIFIER_NOT_FOUND);
			return found ? 0 : -1;
		}
		if (rc < 0x80) {
			/* as the original: message.acked on PUBREC for QoS 2 */
			hook_acked(s, d->msg);
			d->flags |= DLV_PUBREL;
			store_msg_pid(s, d->sseq, pid, 2);
			if (s->c)
				send_ack(s->c, MQTT_PUBREL, pid, 0);
			return 0;
		}
		break; /* v5 error reason: the exchange ends here */
	case MQTT_PUBCOMP:
		if (!found || !(d->flags & DLV_PUBREL))
			return -1;
		break;
	default:
		return -1;
	}
	delivery gone = dq_remove_at(&s->inflight, i);
	dlv_finish(s, &gone);
	if (s->c && s->inflight.n >= s->window)
		send_unsent_inflight(s); /* held back after a reconnect */
	session_pump(s);
	return 0;
}

/* ---------------------------------------------------------------- incoming QoS 2 */

bool session_awaiting_has(session *s, uint16_t pid)
{
	for (uint16_t i = 0; i < s->n_awaiting; i++)
		if (s->awaiting[i].pid == pid)
			return true;
	return false;
}

int session_awaiting_add(session *s, uint16_t pid, uint64_t now_ms)
{
	const broker_config *cfg = s->w->b->cfg;
	uint32_t limit = (uint32_t)cfg->max_awaiting_rel;
	if (s->version == MQTT_V5 && (uint32_t)cfg->max_inflight < limit)
		limit = (uint32_t)cfg->max_inflight;
	if (s->n_awaiting >= limit) {
		/* forget ids whose PUBREL never came (mqtt.await_rel_timeout) */
		uint16_t k = 0;
		for (uint16_t i = 0; i < s->n_awaiting; i++)
			if (now_ms - s->awaiting[i].at_ms < cfg->await_rel_timeout_ms)
				s->awaiting[k++] = s->awaiting[i];
		s->n_awaiting = k;
		if (k >= limit)
			return -1;
	}
	if (s->n_awaiting == s->cap_awaiting) {
		uint16_t nc = (uint16_t)(s->cap_awaiting ? s->cap_awaiting * 2 : 4);
		if (nc > limit)
			nc = (uint16_t)limit;
		rel_wait *nv = realloc(s->awaiting, nc * sizeof(*nv));
		if (!nv)
			return -1;
		s->awaiting = nv;
		s->cap_awaiting = nc;
	}
	s->awaiting[s->n_awaiting++] = (rel_wait){pid, now_ms};
	return 0;
}

bool session_awaiting_remove(session *s, uint16_t pid)
{
	for (uint16_t i = 0; i < s->n_awaiting; i++) {
		if (s->awaiting[i].pid == pid) {
			s->awaiting[i] = s->awaiting[--s->n_awaiting];
			if (s->n_awaiting == 0) {
				free(s->awaiting);
				s->awaiting = NULL;
				s->cap_awaiting = 0;
			}
			return true;
		}
	}
	return false;
}

/* ---------------------------------------------------------------- subscriptions */

static void sync_count(worker *w)
{
	atomic_store_explicit(&w->nsubs, w->router.count, memory_order_release);
}

int session_subscribe(session *s, mqtt_str full, uint8_t options, uint32_t sub_id, bool *is_new)
{
	worker *w = s->w;
	mqtt_str group, filter = full;
	bool shared = mqtt_shared_parse(full, &group, &filter) == 1;
	session_sub *sub = hm_get(&s->subs, full.p, full.len);
	*is_new = sub == NULL;
	if (sub) {
		if (shared) {
			if (shared_subscribe(&w->b->shared, group, filter,
			                     (mqtt_str){(uint8_t *)s->client_id, s->cid_len}, options,
			                     sub_id, s->c != NULL, &sub->shared))
				return -1;
		} else {
			bool n;
			if (router_add(&w->router, filter, s, options, sub_id, &n))
				return -1;
		}
		sub->options = options;
		sub->sub_id = sub_id;
		store_sub_put(s, full, options, sub_id);
		return 0;
	}
	sub = calloc(1, sizeof(*sub) + full.len + 1);
	if (!sub)
		return -1;
	sub->len = (uint16_t)full.len;
	memcpy(sub->full, full.p, full.len);
	sub->filter_off = (uint16_t)(filter.p - full.p);
	sub->options = options;
	sub->sub_id = sub_id;
	if (shared) {
		if (shared_subscribe(&w->b->shared, group, filter,
		                     (mqtt_str){(uint8_t *)s->client_id, s->cid_len}, options, sub_id,
		                     s->c != NULL, &sub->shared))
			goto fail;
	} else {
		bool n;
		if (router_add(&w->router, filter, s, options, sub_id, &n))
			goto fail;
		sync_count(w);
	}
	void *old;
	if (hm_put(&s->subs, sub, &old)) {
		if (shared)
			shared_unsubscribe(&w->b->shared, &sub->shared);
		else
			router_remove(&w->router, filter, s);
		sync_count(w);
		goto fail;
	}
	STAT_ADD(w, subscriptions, 1);
	store_sub_put(s, full, options, sub_id);
	return 0;
fail:
	free(sub);
	return -1;
}

static void sub_remove(session *s, session_sub *sub)
{
	worker *w = s->w;
	if (sub->shared) {
		shared_unsubscribe(&w->b->shared, &sub->shared);
	} else {
		mqtt_str filter = {(uint8_t *)sub->full + sub->filter_off,
		                   (uint32_t)(sub->len - sub->filter_off)};
		router_remove(&w->router, filter, s);
		sync_count(w);
	}
	STAT_ADD(w, subscriptions, -1);
	free(sub->fetched);
	free(sub);
}

int session_unsubscribe(session *s, mqtt_str full)
{
	session_sub *sub = hm_remove(&s->subs, full.p, full.len);
	if (!sub)
		return -1;
	store_sub_del(s, full);
	sub_remove(s, sub);
	return 0;
}

void session_unsubscribe_all(session *s)
{
	for (;;) {
		uint32_t it = 0;
		void *v;
		if (!hm_next(&s->subs, &it, &v))
			break;
		session_sub *sub = v;
		hm_remove(&s->subs, sub->full, sub->len);
		sub_remove(s, sub);
	}
}

/* ---------------------------------------------------------------- fetched messages */

typedef struct same_ctx {
	const uint8_t *id;
	bool found;
} same_ctx;

static void same_id(void *ctx, kmq_msg *m)
{
	same_ctx *c = ctx;
	if (memcmp(m->id, c->id, 16) == 0)
		c->found = true;
}

/* A stored copy of a retained message the broker itself holds: the
 * subscriber got it as a retained message at SUBACK already. */
static bool held_retained(session *s, const kmq_msg *m)
{
	if (!(m->flags & MSG_F_RETAIN))
		return false;
	same_ctx c = {m->id, false};
	retain_match(&s->w->b->retained, m->topic, clock_wall_ms(), same_id, &c);
	return c.found;
}

static bool has_msg(dq *q, const uint8_t id[16])
{
	for (uint32_t i = 0; i < q->n; i++)
		if (memcmp(dq_at(q, i)->msg->id, id, 16) == 0)
			return true;
	return false;
}

void session_deliver_fetched(session *s, const char *filter, uint32_t flen, kmq_msg **msgs,
                             uint32_t n)
{
	worker *w = s->w;
	if (s->fetching)
		s->fetching--;
	session_sub *sub = hm_get(&s->subs, filter, flen);
	if (sub && n) {
		/* the fetched messages first, then what queued while we waited */
		dq old = s->queue;
		memset(&s->queue, 0, sizeof(s->queue));
		uint8_t sq = sub->options & MQTT_SUBOPT_QOS_MASK;
		uint64_t now = clock_wall_ms();
		for (uint32_t i = 0; i < n; i++) {
			kmq_msg *m = msgs[i];
			bool zero = true;
			for (int k = 0; k < 16 && zero; k++)
				zero = m->id[k] == 0;
			if (!zero && (has_msg(&old, m->id) || has_msg(&s->inflight, m->id)))
				continue; /* already on its way */
			/* an earlier fetch for this filter (the client subscribed again,
			 * or a stored subscription and its own SUBSCRIBE overlapped)
			 * delivered everything up to its high-water mark */
			if (!zero && sub->fetched && memcmp(m->id, sub->fetched, 16) <= 0)
				continue;
			if (held_retained(s, m))
				continue;
			if ((sub->options & MQTT_SUBOPT_NO_LOCAL) && m->origin.len == s->cid_len &&
			    memcmp(m->origin.p, s->client_id, s->cid_len) == 0)
				continue;
			if (msg_expired(m, now))
				continue;
			if ((sub->options & SUBOPT_ACL_CHECK) && !authz_may_receive(s, m->topic))
				continue;
			uint8_t flags = 0;
			if ((sub->options & MQTT_SUBOPT_RETAIN_AS_PUBLISHED) && (m->flags & MSG_F_RETAIN))
				flags |= DLV_RETAIN;
			delivery d = {.msg = msg_ref(m), .qos = m->qos < sq ? m->qos : sq, .flags = flags,
			              .sub_id = sub->sub_id};
			if (d.qos == 0 && !s->c && !w->b->cfg->mqueue_store_qos0) {
				dlv_release(&d);
				continue;
			}
			if (d.qos && s->stored)
				d.sseq = store_msg_add(s, m, d.qos, flags, d.sub_id);
			if (!zero) {
				if (!sub->fetched)
					sub->fetched = calloc(1, 16);
				if (sub->fetched && memcmp(m->id, sub->fetched, 16) > 0)
					memcpy(sub->fetched, m->id, 16);
			}
			enqueue(s, &d);
		}
		while (old.n) {
			delivery d = dq_pop(&old);
			enqueue(s, &d);
		}
		free(old.v);
	}
	session_pump(s);
}
