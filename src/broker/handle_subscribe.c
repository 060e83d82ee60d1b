/*
 * handle_subscribe.c - SUBSCRIBE and UNSUBSCRIBE.
 *
 * Each entry of a SUBSCRIBE succeeds or fails on its own (its SUBACK reason);
 * only violations of the protocol itself (no-local on a shared subscription,
 * a subscription identifier when they are disabled) close the connection.
 * Retained messages follow the SUBACK, per entry, honouring Retain Handling:
 * 0 always, 1 only for a new subscription, 2 never; never for shared ones.
 */
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "util/log.h"

typedef struct entry_result {
	mqtt_str full;
	mqtt_str filter;
	uint8_t options;
	bool is_new;
	bool shared;
} entry_result;

static uint8_t fail_rc(const conn *c, uint8_t v5rc)
{
	return c->version == MQTT_V5 ? v5rc : 0x80;
}

int handle_subscribe(conn *c, const mqtt_packet *pkt)
{
	worker *w = c->w;
	const broker_config *cfg = w->b->cfg;
	session *s = c->s;
	const mqtt_subscribe *sb = &pkt->u.subscribe;
	uint32_t sub_id = 0;
	if (c->version == MQTT_V5 && (sb->props.present & MQTT_PF_SUBSCRIPTION_ID)) {
		if (!cfg->subscription_identifiers) {
			conn_protocol_error(c, MQTT_RC_SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
			                    "subscription identifiers are disabled");
			return -1;
		}
		sub_id = sb->props.subscription_id;
	}
	uint8_t rcs_stack[64];
	entry_result res_stack[64];
	uint8_t *rcs = sb->count <= 64 ? rcs_stack : malloc(sb->count);
	entry_result *res = sb->count <= 64 ? res_stack : malloc(sb->count * sizeof(*res));
	int ret = 0;
	if (!rcs || !res) {
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
		ret = -1;
		goto out;
	}
	mqtt_sub_iter it;
	mqtt_sub_iter_init(&it, sb, true);
	mqtt_str full;
	uint8_t opts;
	uint32_t i = 0;
	while (mqtt_sub_next(&it, &full, &opts)) {
		entry_result *r = &res[i];
		memset(r, 0, sizeof(*r));
		r->full = full;
		uint8_t *rc = &rcs[i++];
		mqtt_str group, filter = full;
		int sh = mqtt_shared_parse(full, &group, &filter);
		if (sh < 0) {
			*rc = fail_rc(c, MQTT_RC_TOPIC_FILTER_INVALID);
			continue;
		}
		if (sh == 1) {
			if (!cfg->shared_subscription) {
				*rc = fail_rc(c, MQTT_RC_SHARED_SUBSCRIPTIONS_NOT_SUPPORTED);
				continue;
			}
			if (c->version == MQTT_V5 && (opts & MQTT_SUBOPT_NO_LOCAL)) {
				conn_protocol_error(c, MQTT_RC_PROTOCOL_ERROR,
				                    "no local on a shared subscription");
				ret = -1;
				goto out;
			}
		}
		if (!mqtt_topic_filter_valid(filter) ||
		    mqtt_topic_levels(filter) > (uint32_t)cfg->max_topic_levels) {
			*rc = fail_rc(c, MQTT_RC_TOPIC_FILTER_INVALID);
			continue;
		}
		if (!cfg->wildcard_subscription && mqtt_topic_is_wildcard(filter)) {
			*rc = fail_rc(c, MQTT_RC_WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED);
			continue;
		}
		if (s->subs.count >= (uint64_t)cfg->max_subscriptions &&
		    !hm_get(&s->subs, full.p, full.len)) {
			*rc = fail_rc(c, MQTT_RC_QUOTA_EXCEEDED);
			continue;
		}
		int acl = authz_filter(s, filter);
		if (acl == ACL_FILTER_DENY) {
			STAT_INC(w, acl_denied);
			*rc = fail_rc(c, MQTT_RC_NOT_AUTHORIZED);
			continue;
		}
		if (c->version != MQTT_V5)
			opts &= MQTT_SUBOPT_QOS_MASK; /* v3 has no other option bits */
		uint8_t qos = opts & MQTT_SUBOPT_QOS_MASK;
		if (qos > cfg->max_qos_allowed)
			qos = (uint8_t)cfg->max_qos_allowed;
		opts = (uint8_t)((opts & ~MQTT_SUBOPT_QOS_MASK) | qos);
		if (acl == ACL_FILTER_PARTIAL)
			opts |= SUBOPT_ACL_CHECK;
		bool is_new;
		if (session_subscribe(s, full, opts, sub_id, &is_new)) {
			*rc = fail_rc(c, MQTT_RC_UNSPECIFIED_ERROR);
			continue;
		}
		*rc = qos;
		r->filter = filter;
		r->options = opts;
		r->is_new = is_new;
		r->shared = sh == 1;
	}
	send_suback(c, MQTT_SUBACK, sb->packet_id, rcs, i);
	for (uint32_t k = 0; k < i && c->state == CONN_ACTIVE; k++) {
		entry_result *r = &res[k];
		if (rcs[k] >= 0x80 || r->shared || !cfg->retain_available)
			continue;
		uint8_t rh = (r->options & MQTT_SUBOPT_RETAIN_HANDLING_MASK) >>
		             MQTT_SUBOPT_RETAIN_HANDLING_SHIFT;
		if (rh == 2 || (rh == 1 && !r->is_new))
			continue;
		route_retained(s, r->filter, r->options, sub_id);
	}
	/* rules (on_message_fetch, on_retain_lookup, raw actions) after SUBACK */
	for (uint32_t k = 0; k < i && c->state == CONN_ACTIVE; k++) {
		if (rcs[k] >= 0x80)
			continue;
		entry_result *r = &res[k];
		uint8_t rh = (r->options & MQTT_SUBOPT_RETAIN_HANDLING_MASK) >>
		             MQTT_SUBOPT_RETAIN_HANDLING_SHIFT;
		bool retained = !r->shared && cfg->retain_available && rh != 2 &&
		                !(rh == 1 && !r->is_new);
		hook_subscribed(s, r->full, rcs[k], retained);
	}
out:
	if (rcs != rcs_stack)
		free(rcs);
	if (res != res_stack)
		free(res);
	return ret;
}

int handle_unsubscribe(conn *c, const mqtt_packet *pkt)
{
	const mqtt_subscribe *sb = &pkt->u.subscribe;
	uint8_t rcs_stack[64];
	uint8_t *rcs = sb->count <= 64 ? rcs_stack : malloc(sb->count);
	if (!rcs) {
		conn_abort(c, MQTT_RC_UNSPECIFIED_ERROR);
		return -1;
	}
	mqtt_sub_iter it;
	mqtt_sub_iter_init(&it, sb, false);
	mqtt_str full;
	uint8_t opts;
	uint32_t i = 0;
	while (mqtt_sub_next(&it, &full, &opts)) {
		bool ok = session_unsubscribe(c->s, full) == 0;
		rcs[i++] = ok ? MQTT_RC_SUCCESS : MQTT_RC_NO_SUBSCRIPTION_EXISTED;
		if (ok)
			hook_unsubscribed(c->s, full);
	}
	int rc = send_suback(c, MQTT_UNSUBACK, sb->packet_id, rcs, i);
	if (rcs != rcs_stack)
		free(rcs);
	return rc;
}
