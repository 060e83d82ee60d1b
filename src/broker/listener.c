/*
 * listener.c - listening sockets, one per listener per worker.
 *
 * Every worker binds its own socket to each listener address with
 * SO_REUSEPORT, so the kernel balances new connections across workers with no
 * accept lock and no cross-thread hand-off of fresh sockets. libuv 1.44 has
 * no flag for SO_REUSEPORT, so the socket is made here and given to libuv
 * with uv_tcp_open.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker.h"
#include "util/log.h"

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
	if (bind(fd, res->ai_addr, res->ai_addrlen))
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

static void on_connection(uv_stream_t *server, int status)
{
	worker *w = server->loop->data;
	uint8_t idx = (uint8_t)(uintptr_t)server->data;
	if (status < 0) {
		static log_ratelimit rl;
		log_ratelimited(&rl, 10000, LOG_WARNING, "accept failed: %s", uv_strerror(status));
		return;
	}
	conn *c = conn_new(w, idx);
	if (!c) {
		/* out of memory: accept and drop, or the kernel keeps waking us */
		uv_os_fd_t lfd;
		if (uv_fileno((uv_handle_t *)server, &lfd) == 0) {
			int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
			if (fd >= 0)
				close(fd);
		}
		STAT_INC(w, conn_refused);
		return;
	}
	if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
		return;
	}
	const listener_cfg *l = w->b->cfg->listeners;
	for (unsigned i = 0; l && i < idx; i++)
		l = l->next;
	int64_t n = atomic_fetch_add(&w->b->listener_conns[idx], 1) + 1;
	if (l && n > l->max_connections) {
		static log_ratelimit rl;
		log_ratelimited(&rl, 10000, LOG_WARNING,
		                "listener %s: connection limit %lld reached, refusing connections",
		                l->name, (long long)l->max_connections);
		STAT_INC(w, conn_refused);
		conn_abort(c, MQTT_RC_QUOTA_EXCEEDED);
		return;
	}
	STAT_INC(w, conn_accepted);
	if (conn_start(c, NULL, 0))
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
}

int listeners_open(worker *w)
{
	unsigned n = 0;
	for (listener_cfg *l = w->b->cfg->listeners; l; l = l->next)
		n++;
	w->listeners = calloc(n ? n : 1, sizeof(uv_tcp_t));
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
		uv_tcp_t *t = &w->listeners[i];
		uv_tcp_init(&w->loop, t);
		t->data = (void *)(uintptr_t)i;
		int rc = uv_tcp_open(t, fd);
		if (rc == 0)
			rc = uv_listen((uv_stream_t *)t, (int)l->backlog, on_connection);
		if (rc) {
			log_error("listener %s: cannot listen on %s:%u: %s", l->name, l->addr.host,
			          l->addr.port, uv_strerror(rc));
			w->nlisteners = i + 1;
			return -1;
		}
		w->nlisteners = i + 1;
		if (w->id == 0)
			log_notice("listener %s on %s:%u", l->name, l->addr.host[0] ? l->addr.host : "*",
			           l->addr.port);
	}
	return 0;
}

void listeners_close(worker *w)
{
	for (unsigned i = 0; i < w->nlisteners; i++)
		if (!uv_is_closing((uv_handle_t *)&w->listeners[i]))
			uv_close((uv_handle_t *)&w->listeners[i], NULL);
}
