/* funcs.c - see funcs.h. */
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
