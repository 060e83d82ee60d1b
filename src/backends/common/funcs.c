/* funcs.c - see funcs.h. */
#include <stdlib.h>
#include <string.h>
#include "backends/common/funcs.h"

bool applies_not_implicit(const hook_event *ev) { return !ev->implicit; }

bool applies_publish(const hook_event *ev)
{
	return !ev->implicit && ev->msg && ev->msg->qos > 0 &&
	       !(ev->retain && ev->msg->payload.len == 0);
}

bool applies_store(const hook_event *ev)
{
	return !ev->implicit && ev->msg && !(ev->retain && ev->msg->payload.len == 0);
}

bool applies_retain(const hook_event *ev)
{
	return ev->msg && ev->retain && ev->msg->payload.len > 0;
}

bool applies_retain_delete(const hook_event *ev)
{
	return ev->msg && ev->retain && ev->msg->payload.len == 0;
}

bool applies_acked(const hook_event *ev) { return ev->msg && ev->nfilters > 0; }

bool applies_retain_lookup(const hook_event *ev) { return !ev->implicit && !ev->no_retained; }

/* "host:port" (IPv6 in brackets) at s[0..n) into host/port */
int backend_parse_addr(const char *s, size_t n, char *host, size_t hlen, int *port)
{
	const char *colon = NULL;
	const char *h = s;
	size_t hl;
	if (n && s[0] == '[') {
		const char *rb = memchr(s, ']', n);
		if (!rb || rb + 1 >= s + n || rb[1] != ':')
			return -1;
		h = s + 1;
		hl = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		for (size_t i = n; i > 0; i--)
			if (s[i - 1] == ':') {
				colon = s + i - 1;
				break;
			}
		if (!colon)
			return -1;
		hl = (size_t)(colon - s);
	}
	if (hl == 0 || hl >= hlen)
		return -1;
	memcpy(host, h, hl);
	host[hl] = 0;
	char pbuf[8];
	size_t pl = (size_t)(s + n - colon - 1);
	if (pl == 0 || pl >= sizeof(pbuf))
		return -1;
	memcpy(pbuf, colon + 1, pl);
	pbuf[pl] = 0;
	char *end;
	long p = strtol(pbuf, &end, 10);
	if (*end || p <= 0 || p > 65535)
		return -1;
	*port = (int)p;
	return 0;
}
