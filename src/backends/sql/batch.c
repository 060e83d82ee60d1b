/*
 * batch.c - the SQL family's run_batch, the function table, and helpers.
 *
 * One batch, one transaction. A permanent failure of one job rolls the
 * transaction back and the batch is run again one job per transaction, so
 * the good jobs commit and the bad one fails alone. A recoverable failure
 * (busy, I/O, full, read-only, connection lost) rolls back and leaves every
 * job not yet committed for the framework to retry, in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/common/funcs.h"
#include "backends/sql/sql.h"
#include "broker/message.h"

#define H(x) HOOK_BIT(x)


const pfunc sql_funcs[SQLF__COUNT] = {
	{"on_client_connected", H(HOOK_CLIENT_CONNECTED), PFUNC_WRITE, SQLF_CLIENT_CONNECTED, 0, 0,
	 applies_not_implicit},
	{"on_client_disconnected", H(HOOK_CLIENT_DISCONNECTED), PFUNC_WRITE,
	 SQLF_CLIENT_DISCONNECTED, 0, 0, applies_not_implicit},
	{"on_subscribe_lookup", H(HOOK_CLIENT_CONNECTED) | H(HOOK_SESSION_CREATED), PFUNC_LOOKUP,
	 SQLF_SUBSCRIBE_LOOKUP, PRESULT_SUBS, 0, applies_not_implicit},
	{"on_message_fetch", H(HOOK_SESSION_SUBSCRIBED), PFUNC_LOOKUP, SQLF_MESSAGE_FETCH,
	 PRESULT_MSGS, 0, applies_not_implicit},
	{"on_retain_lookup", H(HOOK_SESSION_SUBSCRIBED), PFUNC_LOOKUP, SQLF_RETAIN_LOOKUP,
	 PRESULT_RETAINED, 0, applies_retain_lookup},
	{"on_message_publish", H(HOOK_MESSAGE_PUBLISH), PFUNC_WRITE, SQLF_MESSAGE_PUBLISH, 0, 0,
	 applies_publish},
	{"on_message_store", H(HOOK_MESSAGE_PUBLISH), PFUNC_WRITE, SQLF_MESSAGE_STORE, 0, 0,
	 applies_store},
	{"on_message_retain", H(HOOK_MESSAGE_PUBLISH), PFUNC_WRITE, SQLF_MESSAGE_RETAIN, 0, 1,
	 applies_retain},
	{"on_retain_delete", H(HOOK_MESSAGE_PUBLISH), PFUNC_WRITE, SQLF_RETAIN_DELETE, 0, 1,
	 applies_retain_delete},
	{"on_message_acked", H(HOOK_MESSAGE_ACKED), PFUNC_WRITE, SQLF_MESSAGE_ACKED, 0, 0,
	 applies_acked},
	{"on_acked_delete", H(HOOK_SESSION_UNSUBSCRIBED), PFUNC_WRITE, SQLF_ACKED_DELETE, 0, 0,
	 applies_not_implicit},
};

int sql_run_job(sql_conn *sc, pconn *c, pjob *j)
{
	if (!j->rule->func)
		return sql_raw_run(sc, c, j);
	switch (j->rule->func->id) {
	case SQLF_CLIENT_CONNECTED: return sql_client_connected(sc, c, j);
	case SQLF_CLIENT_DISCONNECTED: return sql_client_disconnected(sc, c, j);
	case SQLF_SUBSCRIBE_LOOKUP: return sql_subscribe_lookup(sc, c, j);
	case SQLF_MESSAGE_FETCH: return sql_message_fetch(sc, c, j);
	case SQLF_RETAIN_LOOKUP: return sql_retain_lookup(sc, c, j);
	case SQLF_MESSAGE_PUBLISH:
	case SQLF_MESSAGE_STORE: return sql_message_store(sc, c, j);
	case SQLF_MESSAGE_RETAIN: return sql_message_retain(sc, c, j);
	case SQLF_RETAIN_DELETE: return sql_retain_delete(sc, c, j);
	case SQLF_MESSAGE_ACKED: return sql_message_acked(sc, c, j);
	case SQLF_ACKED_DELETE: return sql_acked_delete(sc, c, j);
	}
	return SQLR_FAIL;
}

static void mark(pjob **jobs, size_t n, uint8_t status)
{
	for (size_t i = 0; i < n; i++)
		if (jobs[i]->status == PJOB_PENDING)
			jobs[i]->status = status;
}

int sql_run_batch(pconn *c, pjob **jobs, size_t n)
{
	sql_conn *sc = (sql_conn *)c;
	const sql_driver *d = sc->drv;
	int rc = d->begin(c);
	if (rc != SQLR_OK) {
		/* busy/locked: retry on this connection; anything else: reopen it */
		mark(jobs, n, PJOB_RETRY);
		return rc == SQLR_RETRY ? 0 : -1;
	}
	size_t bad = n;
	for (size_t i = 0; i < n; i++) {
		if (jobs[i]->status != PJOB_PENDING)
			continue;
		rc = sql_run_job(sc, c, jobs[i]);
		if (rc != SQLR_OK) {
			bad = i;
			break;
		}
	}
	if (bad == n) {
		rc = d->commit(c);
		if (rc == SQLR_OK) {
			mark(jobs, n, PJOB_OK);
			return 0;
		}
		d->rollback(c);
		for (size_t i = 0; i < n; i++)
			presult_clear(jobs[i]->result);
		mark(jobs, n, PJOB_RETRY);
		return rc == SQLR_RETRY ? 0 : -1;
	}
	d->rollback(c);
	for (size_t i = 0; i < n; i++)
		presult_clear(jobs[i]->result);
	if (rc == SQLR_RETRY) {
		mark(jobs, n, PJOB_RETRY);
		return 0;
	}
	/* a permanent failure: run each job on its own so only the bad one fails */
	for (size_t i = 0; i < n; i++) {
		pjob *j = jobs[i];
		if (j->status != PJOB_PENDING)
			continue;
		if (d->begin(c) != SQLR_OK) {
			mark(jobs + i, n - i, PJOB_RETRY);
			return -1;
		}
		rc = sql_run_job(sc, c, j);
		if (rc == SQLR_OK)
			rc = d->commit(c);
		if (rc == SQLR_OK) {
			j->status = PJOB_OK;
			continue;
		}
		d->rollback(c);
		presult_clear(j->result);
		if (rc == SQLR_RETRY) {
			mark(jobs + i, n - i, PJOB_RETRY);
			return 0;
		}
		j->status = PJOB_FAILED;
	}
	return 0;
}

/* ---------------------------------------------------------------- helpers */

void sql_datetime(uint64_t ms, char out[20])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 20, "%Y-%m-%d %H:%M:%S", &tm);
}

void sql_msgid_floor(uint64_t now_ms, uint64_t range_ms, char out[33])
{
	uint64_t from = range_ms >= now_ms ? 0 : now_ms - range_ms;
	uint8_t id[16] = {0};
	uint64_t hi = from << 16;
	for (int i = 0; i < 8; i++)
		id[i] = (uint8_t)(hi >> (56 - 8 * i));
	msgid_to_hex(id, out);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int sql_msgid_parse(const char *hex, size_t len, uint8_t id[16])
{
	if (len != 32)
		return -1;
	for (int i = 0; i < 16; i++) {
		int a = hexval(hex[2 * i]), b = hexval(hex[2 * i + 1]);
		if (a < 0 || b < 0)
			return -1;
		id[i] = (uint8_t)(a << 4 | b);
	}
	return 0;
}

bool sql_prefix_range(mqtt_str filter, char *buf, mqtt_str *lo, mqtt_str *hi)
{
	uint32_t n = 0;
	while (n < filter.len && filter.p[n] != '+' && filter.p[n] != '#')
		n++;
	if (n == 0)
		return false;
	memcpy(buf, filter.p, n);
	/* "a/#" matches "a" too: start the range at the parent level */
	uint32_t lo_n = n;
	if (n + 1 == filter.len && filter.p[n] == '#' && filter.p[n - 1] == '/')
		lo_n = n - 1;
	*lo = (mqtt_str){(const uint8_t *)buf, lo_n};
	/* hi: the prefix with its last byte below 0xFF incremented, rest cut */
	char *h = buf + n + 1;
	memcpy(h, filter.p, n);
	uint32_t k = n;
	while (k > 0 && (uint8_t)h[k - 1] == 0xFF)
		k--;
	if (k == 0)
		return false; /* all 0xFF: no upper bound needed, treat as every topic */
	h[k - 1] = (char)((uint8_t)h[k - 1] + 1);
	*hi = (mqtt_str){(const uint8_t *)h, k};
	return true;
}

int sql_exec_builtin(sql_conn *sc, pconn *c, int k, const sql_val *v, int nv, sql_row_fn cb,
                     void *ud)
{
	return sc->drv->exec(c, &sc->drv->dialect->stmt[k], sc->drv->dialect->stmt[k], v, nv, cb, ud);
}

kmq_msg *sql_row_msg(sql_val msgid, sql_val topic, sql_val sender, sql_val qos, sql_val retain,
                     sql_val payload)
{
	if (topic.type == SQLV_NULL || topic.len == 0 || topic.len > 65535)
		return NULL;
	uint8_t id[16] = {0};
	bool ours = msgid.type == SQLV_TEXT && sql_msgid_parse(msgid.p, msgid.len, id) == 0;
	uint64_t ts = 0;
	if (ours) {
		for (int i = 0; i < 6; i++)
			ts = ts << 8 | id[i];
	}
	int64_t q = qos.type == SQLV_INT ? qos.i : 0;
	msg_init mi = {
		.topic = {topic.p, (uint32_t)topic.len},
		.payload = {payload.type == SQLV_NULL ? (const uint8_t *)"" : payload.p,
		            payload.type == SQLV_NULL ? 0 : (uint32_t)payload.len},
		.qos = (uint8_t)(q < 0 ? 0 : q > 2 ? 2 : q),
		.retain = retain.type == SQLV_INT && retain.i != 0,
		.origin = {sender.type == SQLV_NULL ? (const uint8_t *)"" : sender.p,
		           sender.type == SQLV_NULL ? 0 : (uint32_t)sender.len},
		.now_ms = ts,
	};
	kmq_msg *m = msg_new(&mi);
	if (m)
		memcpy(m->id, id, 16);
	return m;
}
