/*
 * worker.c - one I/O worker: a thread running a libuv loop.
 *
 * The loop's phases are used deliberately:
 *   poll   - socket reads (conn.c) and the inbox wake-up (uv_async) run here
 *            and only append to output buffers / outboxes;
 *   check  - after all of an iteration's callbacks: flush every dirty
 *            connection once and push each outbox batch to its worker with
 *            one lock and one wake-up;
 *   idle   - an idle handle is active exactly while such work is pending, so
 *            work created outside the poll phase (timers) never waits for
 *            the next socket event.
 * The 1-second tick does housekeeping: keep-alive and idle timeouts, closing
 * deadlines, releasing buffers of quiet connections.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker.h"
#include "util/clock.h"
#include "util/log.h"


static hm_key session_key(const void *v)
{
	const session *s = v;
	return (hm_key){s->client_id, s->cid_len};
}

uint64_t worker_now(worker *w) { return uv_now(&w->loop); }

static void on_idle(uv_idle_t *h) { (void)h; }

void worker_wake_self(worker *w)
{
	if (!uv_is_active((uv_handle_t *)&w->idle))
		uv_idle_start(&w->idle, on_idle);
}

static void inbox_take(worker *w, inbox_item **head)
{
	pthread_mutex_lock(&w->inbox_mu);
	*head = w->inbox_head;
	w->inbox_head = w->inbox_tail = NULL;
	pthread_mutex_unlock(&w->inbox_mu);
}

static void inbox_push_chain(worker *to, inbox_item *head, inbox_item *tail)
{
	pthread_mutex_lock(&to->inbox_mu);
	if (to->inbox_tail)
		to->inbox_tail->next = head;
	else
		to->inbox_head = head;
	to->inbox_tail = tail;
	pthread_mutex_unlock(&to->inbox_mu);
	uv_async_send(&to->async);
}

void worker_post(worker *from, unsigned to, inbox_item *it)
{
	it->next = NULL;
	if (from->ob_tail[to])
		from->ob_tail[to]->next = it;
	else
		from->ob_head[to] = it;
	from->ob_tail[to] = it;
	from->ob_pending |= 1ull << to;
	worker_wake_self(from);
}

void worker_post_external(worker *to, inbox_item *it)
{
	it->next = NULL;
	inbox_push_chain(to, it, it);
}

static void flush_outboxes(worker *w)
{
	uint64_t m = w->ob_pending;
	w->ob_pending = 0;
	while (m) {
		unsigned to = (unsigned)__builtin_ctzll(m);
		m &= m - 1;
		inbox_item *h = w->ob_head[to], *t = w->ob_tail[to];
		w->ob_head[to] = w->ob_tail[to] = NULL;
		if (h)
			inbox_push_chain(&w->b->workers[to], h, t);
	}
}

static void item_free(inbox_item *it)
{
	if (it->kind == INBOX_CALL && it->fn)
		it->fn(NULL, it->arg); /* never run: let it free its argument */
	msg_unref(&it->msg);
	if (it->tok)
		state_tok_release(NULL, &it->tok, true);
	if (it->ho) {
		if (it->ho->fd >= 0)
			close(it->ho->fd);
		free(it->ho);
	}
	free(it);
}

static void shutdown_worker(worker *w);

static void handle_item(worker *w, inbox_item *it)
{
	switch (it->kind) {
	case INBOX_FANOUT:
		/* a sync PUBLISH's stored copies here hold its token too */
		w->route_tok = it->tok;
		if (!w->stopping)
			route_local(w, it->msg);
		w->route_tok = NULL;
		break;
	case INBOX_TARGETED: {
		session *s = hm_get(&w->sessions, it->cid, it->cid_len);
		if (!s || w->stopping) {
			STAT_INC(w, dropped_no_session);
			STAT_INC(w, msgs_dropped);
			break;
		}
		uint8_t qos = it->msg->qos < (it->options & MQTT_SUBOPT_QOS_MASK)
		                      ? it->msg->qos
		                      : (it->options & MQTT_SUBOPT_QOS_MASK);
		uint8_t flags = 0;
		if ((it->options & MQTT_SUBOPT_RETAIN_AS_PUBLISHED) && (it->msg->flags & MSG_F_RETAIN))
			flags |= DLV_RETAIN;
		if ((it->options & SUBOPT_ACL_CHECK) && !authz_may_receive(s, it->msg->topic)) {
			STAT_INC(w, dropped_denied);
			break;
		}
		w->route_tok = it->tok;
		session_deliver(s, it->msg, qos, flags, it->sub_id ? &it->sub_id : NULL,
		                it->sub_id ? 1 : 0);
		w->route_tok = NULL;
		break;
	}
	case INBOX_HANDOFF:
		if (w->stopping)
			break;
		handle_handoff(w, it->ho);
		it->ho = NULL; /* adopted: the fd now belongs to a connection */
		break;
	case INBOX_SHUTDOWN:
		shutdown_worker(w);
		break;
	case INBOX_CALL:
		it->fn(w, it->arg);
		it->fn = NULL;
		break;
	}
	item_free(it);
}

static void on_async(uv_async_t *a)
{
	worker *w = a->data;
	inbox_item *it;
	inbox_take(w, &it);
	while (it) {
		inbox_item *next = it->next;
		handle_item(w, it);
		it = next;
	}
}

static void on_check(uv_check_t *h)
{
	worker *w = h->data;
	/* Other workers' items first, then our clients' output: a PUBACK must
	 * not reach a publisher before the message it acknowledges is in the
	 * other workers' inboxes, or a client that reacts to the PUBACK (say,
	 * subscribes on another worker) could get a retained message both from
	 * the store and, later, live. */
	if (w->ob_pending)
		flush_outboxes(w);
	/* Flushing may not add connections to the dirty list (conn_flush
	 * clears CF_DIRTY first), so one pass drains it. */
	conn *c = w->dirty;
	w->dirty = NULL;
	while (c) {
		conn *next = c->dirty_next;
		conn_flush_dirty(c);
		c = next;
	}
	if (w->ob_pending) /* items made while flushing (a closed connection's will) */
		flush_outboxes(w);
	if (!w->dirty && !w->ob_pending && uv_is_active((uv_handle_t *)&w->idle))
		uv_idle_stop(&w->idle);
}

static void on_tick(uv_timer_t *t)
{
	worker *w = t->data;
	uint64_t now = worker_now(w);
	for (conn *c = w->conns, *next; c; c = next) {
		next = c->next;
		conn_tick(c, now);
	}
	if (w->stopping && !w->conns)
		uv_stop(&w->loop);
}

int worker_init(worker *w, broker *b, unsigned id)
{
	memset(w, 0, sizeof(*w));
	w->b = b;
	w->id = id;
	hm_init(&w->sessions, session_key);
	router_init(&w->router);
	msgid_gen_init(&w->ids, id);
	if (!(w->readbuf = malloc(READBUF_SIZE)))
		return -1;
	if (pthread_mutex_init(&w->inbox_mu, NULL))
		goto fail;
	if (uv_loop_init(&w->loop))
		goto fail_mu;
	w->loop.data = w;
	uv_async_init(&w->loop, &w->async, on_async);
	w->async.data = w;
	uv_timer_init(&w->loop, &w->tick);
	w->tick.data = w;
	uv_check_init(&w->loop, &w->check);
	w->check.data = w;
	uv_idle_init(&w->loop, &w->idle);
	w->idle.data = w;
	return 0;
fail_mu:
	pthread_mutex_destroy(&w->inbox_mu);
fail:
	free(w->readbuf);
	w->readbuf = NULL;
	return -1;
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	uv_timer_start(&w->tick, on_tick, 1000, 1000);
	uv_check_start(&w->check, on_check);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	atomic_fetch_add(&w->b->workers_done, 1);
	return NULL;
}

int worker_start(worker *w)
{
	if (listeners_open(w))
		return -1;
	if (pthread_create(&w->thread, NULL, worker_main, w)) {
		log_error("cannot start I/O worker %u: %s", w->id, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Drain: stop accepting, tell MQTT 5 clients the server is going away, flush
 * and close every connection, then leave the loop (on_tick checks that every
 * connection is gone; conn_tick enforces a closing deadline).
 */
static void shutdown_worker(worker *w)
{
	if (w->stopping)
		return;
	w->stopping = true;
	listeners_close(w);
	for (conn *c = w->conns; c; c = c->next) {
		if (c->state == CONN_ACTIVE)
			conn_shutdown(c, MQTT_RC_SERVER_SHUTTING_DOWN, true);
		else if (c->state < CONN_CLOSING)
			conn_abort(c, MQTT_RC_SERVER_SHUTTING_DOWN);
	}
	uv_timer_start(&w->tick, on_tick, 50, 100);
}

static void close_walk(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

void worker_free(worker *w)
{
	if (!w->readbuf)
		return;
	/* sessions outlive their connections; free them all */
	session *list[256];
	for (;;) {
		uint32_t it = 0, n = 0;
		void *v;
		while (n < 256 && hm_next(&w->sessions, &it, &v))
			list[n++] = v;
		if (!n)
			break;
		for (uint32_t i = 0; i < n; i++) {
			session *s = list[i];
			if (s->will)
				msg_unref(&s->will); /* shutting down: wills are not published */
			session_destroy(&s);
		}
	}
	uv_walk(&w->loop, close_walk, NULL);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	uv_loop_close(&w->loop);
	inbox_item *it;
	inbox_take(w, &it);
	while (it) {
		inbox_item *next = it->next;
		item_free(it);
		it = next;
	}
	for (unsigned i = 0; i < KEEPMQ_MAX_WORKERS; i++) {
		for (it = w->ob_head[i]; it;) {
			inbox_item *next = it->next;
			item_free(it);
			it = next;
		}
	}
	router_free(&w->router);
	hm_free(&w->sessions);
	pthread_mutex_destroy(&w->inbox_mu);
	free(w->listeners);
	route_scratch_free(w);
	free(w->readbuf);
	w->readbuf = NULL;
}
