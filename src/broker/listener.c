/*
 * listener.c - listening sockets, one per listener per worker.
 *
 * Every worker binds its own socket to each listener address with
 * SO_REUSEPORT, so the kernel balances new connections across workers with no
 * accept lock and no cross-thread hand-off of fresh sockets. The socket is
 * watched with a uv_poll_t and accepted with accept4(2) straight into a
 * non-blocking descriptor that conn.c owns; up to ACCEPTS_PER_EVENT per
 * wake-up so a connection storm cannot monopolise the loop. When the process
 * runs out of descriptors (EMFILE), accepting pauses for a moment instead of
 * spinning on a socket that stays readable.
 */
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "broker/broker.h"
#include "util/log.h"

#define ACCEPTS_PER_EVENT 64
#define EMFILE_PAUSE_MS 200

static int open_socket(const listener_cfg *l, char *err, size_t errlen)
{
	struct addrinfo hints = {0}, *res = NULL;
	char port[8];
	snprintf(port, sizeof(port), "%u", l->addr.port);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	int gai = getaddrinfo(l->addr.host[0] ? l->addr.host : NULL, port, &hints, &res);
	if (gai) {
		snprintf(err, errlen, "cannot resolve %s: %s", l->addr.host, gai_strerror(gai));
		return -1;
	}
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)))
		goto fail;
	if (res->ai_family == AF_INET6) {
		int zero = 0; /* "[::]" also serves IPv4, as people expect */
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	}
	if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, (int)l->backlog))
		goto fail;
	freeaddrinfo(res);
	return fd;
fail:
	snprintf(err, errlen, "cannot listen on %s:%u: %s", l->addr.host, l->addr.port,
	         strerror(errno));
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	return -1;
}

static const listener_cfg *cfg_of(const worker *w, unsigned idx)
{
	const listener_cfg *l = w->b->cfg->listeners;
	for (unsigned i = 0; l && i < idx; i++)
		l = l->next;
	return l;
}

static void on_accept(uv_poll_t *h, int status, int events);

static void on_retry(uv_timer_t *t)
{
	listener *ls = t->data;
	if (ls->open)
		uv_poll_start(&ls->poll, UV_READABLE, on_accept);
}

static void accept_one(worker *w, listener *ls, int fd, const peer_addr *peer)
{
	const listener_cfg *l = cfg_of(w, ls->idx);
	int64_t n = atomic_fetch_add(&w->b->listener_conns[ls->idx], 1) + 1;
	if (l && n > l->max_connections) {
		static log_ratelimit rl;
		log_ratelimited(&rl, 10000, LOG_WARNING,
		                "listener %s: connection limit %lld reached, refusing connections",
		                l->name, (long long)l->max_connections);
		atomic_fetch_sub(&w->b->listener_conns[ls->idx], 1);
		STAT_INC(w, conn_refused);
		close(fd);
		return;
	}
	conn *c = conn_new(w, fd, ls->idx);
	if (!c) {
		atomic_fetch_sub(&w->b->listener_conns[ls->idx], 1);
		STAT_INC(w, conn_refused);
		close(fd);
		return;
	}
	c->peer = *peer;
	STAT_INC(w, conn_accepted);
	if (conn_start(c, NULL, 0))
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
}

static void on_accept(uv_poll_t *h, int status, int events)
{
	listener *ls = h->data;
	worker *w = h->loop->data;
	for (int i = 0; i < ACCEPTS_PER_EVENT; i++) {
		peer_addr peer;
		socklen_t len = sizeof(peer);
		memset(&peer, 0, sizeof(peer));
		int fd = accept4(ls->fd, &peer.sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			accept_one(w, ls, fd, &peer);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			static log_ratelimit rl;
			log_ratelimited(&rl, 10000, LOG_WARNING,
			                "cannot accept connections: %s (raise the open files limit, "
			                "ulimit -n)",
			                strerror(errno));
			uv_poll_stop(&ls->poll);
			uv_timer_start(&ls->retry, on_retry, EMFILE_PAUSE_MS, 0);
		}
		return; /* EAGAIN: nothing more to accept */
	}
}

int listeners_open(worker *w)
{
	unsigned n = 0;
	for (listener_cfg *l = w->b->cfg->listeners; l; l = l->next)
		n++;
	w->listeners = calloc(n ? n : 1, sizeof(listener));
	if (!w->listeners)
		return -1;
	unsigned i = 0;
	for (listener_cfg *l = w->b->cfg->listeners; l; l = l->next, i++) {
		char err[256];
		int fd = open_socket(l, err, sizeof(err));
		if (fd < 0) {
			log_error("listener %s: %s", l->name, err);
			return -1;
		}
		listener *ls = &w->listeners[i];
		ls->fd = fd;
		ls->idx = (uint8_t)i;
		if (uv_poll_init(&w->loop, &ls->poll, fd)) {
			close(fd);
			return -1;
		}
		ls->poll.data = ls;
		uv_timer_init(&w->loop, &ls->retry);
		ls->retry.data = ls;
		ls->open = true;
		w->nlisteners = i + 1;
		uv_poll_start(&ls->poll, UV_READABLE, on_accept);
		if (w->id == 0)
			log_notice("listener %s on %s:%u", l->name, l->addr.host[0] ? l->addr.host : "*",
			           l->addr.port);
	}
	return 0;
}

static void listener_closed(uv_handle_t *h)
{
	listener *ls = h->data;
	close(ls->fd);
	ls->fd = -1;
}

void listeners_close(worker *w)
{
	for (unsigned i = 0; i < w->nlisteners; i++) {
		listener *ls = &w->listeners[i];
		if (!ls->open)
			continue;
		ls->open = false;
		uv_close((uv_handle_t *)&ls->retry, NULL);
		uv_close((uv_handle_t *)&ls->poll, listener_closed);
	}
}
