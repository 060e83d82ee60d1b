/*
 * funcs.h - what every backend's built-in function table shares: the
 * predicates that decide whether a spec function acts on an event. The
 * same function name means the same thing in every backend, so these are
 * written once (a function that ignores an event is not "matched").
 */
#ifndef KEEPMQ_BACKENDS_FUNCS_H
#define KEEPMQ_BACKENDS_FUNCS_H

#include "persist/persist.h"

#define HOOK_BIT(x) (1u << (x))

/* client.*, session.* events raised by a client (not implicit ones). */
bool applies_not_implicit(const hook_event *ev);
/* on_message_publish: QoS > 0, not the empty payload that clears a retained
 * message. */
bool applies_publish(const hook_event *ev);
/* on_message_store: every message, QoS 0 included, but not a retained clear. */
bool applies_store(const hook_event *ev);
/* on_message_retain: retain flag and a payload. */
bool applies_retain(const hook_event *ev);
/* on_retain_delete: retain flag and an empty payload. */
bool applies_retain_delete(const hook_event *ev);
/* on_message_acked*: a message acknowledged under at least one filter. */
bool applies_acked(const hook_event *ev);
/* on_retain_lookup: a subscription that gets retained messages. */
bool applies_retain_lookup(const hook_event *ev);

/* "host:port" (an IPv6 host in brackets) at s[0..n) into host (hlen bytes)
 * and port. Returns 0, -1 if it is not one. */
int backend_parse_addr(const char *s, size_t n, char *host, size_t hlen, int *port);

#endif
