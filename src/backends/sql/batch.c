/*
 * batch.c - the SQL family's run_batch, the function table, and helpers.
 *
 * One batch, one transaction. A permanent failure of one job rolls the
 * transaction back and the batch is run again one job per transaction, so
 * the good jobs commit and the bad one fails alone. A recoverable failure
 * (busy, I/O, full, read-only, connection lost) rolls back and leaves every
 * job not yet committed for the framework to retry, in order; a lost
 * connection (SQLR_LOST) also makes the framework reopen it.
 *
 * Consecutive message-store jobs go to the database as multi-row INSERTs
 * where the dialect has them (MySQL, PostgreSQL): one round trip for up to
 * 64 messages instead of one each.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <limits.h>

#include <openssl/evp.h>

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

static bool is_store(const pjob *j)
{
	const pfunc *f = j->rule->func;
	return f && (f->id == SQLF_MESSAGE_PUBLISH || f->id == SQLF_MESSAGE_STORE);
}

/* Rows per multi-row INSERT: a run of n store jobs is sent as statements of
 * MULTI_MAX rows and one of the rest, each size prepared once per connection
 * (keyed by &multi_keys[rows - 1]). One statement of the exact size costs the
 * server far less than the same rows split into smaller statements. */
#define MULTI_MAX 64
static const char multi_keys[MULTI_MAX];

/* "head (?, ...), (...) tail" for n rows; NULL if out of memory. */
static char *multi_text(const sql_dialect *d, uint32_t n)
{
	size_t cap = strlen(d->msg_insert_head) + strlen(d->msg_insert_tail) + (size_t)n * 64 + 1;
	char *t = malloc(cap), *o = t;
	if (!t)
		return NULL;
	o += sprintf(o, "%s", d->msg_insert_head);
	for (uint32_t r = 0; r < n; r++) {
		if (r)
			o += sprintf(o, ", ");
		*o++ = '(';
		for (uint32_t k = 0; k < 8; k++) {
			if (d->placeholder == '$')
				o += sprintf(o, "%s$%u", k ? ", " : "", r * 8 + k + 1);
			else
				o += sprintf(o, "%s?", k ? ", " : "");
		}
		*o++ = ')';
	}
	sprintf(o, "%s", d->msg_insert_tail);
	return t;
}

/* Stores the messages of jobs[0..n) (store jobs) with multi-row INSERTs. */
static int store_run(sql_conn *sc, pconn *c, pjob **jobs, size_t n)
{
	const sql_dialect *d = sc->drv->dialect;
	int rc = SQLR_OK;
	size_t done = 0;
	while (done < n && rc == SQLR_OK) {
		uint32_t rows = n - done < MULTI_MAX ? (uint32_t)(n - done) : MULTI_MAX;
		sql_val v[MULTI_MAX * 8];
		char ids[MULTI_MAX][33], ats[MULTI_MAX][20];
		char *tmp[MULTI_MAX] = {0};
		for (uint32_t r = 0; r < rows && rc == SQLR_OK; r++)
			if (sql_msg_insert_values(sc, jobs[done + r], v + r * 8, ids[r], ats[r], &tmp[r]))
				rc = SQLR_RETRY;
		if (rc == SQLR_OK) {
			if (rows == 1) {
				rc = sql_exec_builtin(sc, c, SQL_MSG_INSERT, v, 8, NULL, NULL);
			} else {
				char *text = multi_text(d, rows);
				rc = text ? sc->drv->exec(c, &multi_keys[rows - 1], text, v, (int)rows * 8, NULL,
				                          NULL)
				          : SQLR_RETRY;
				free(text);
			}
		}
		for (uint32_t r = 0; r < rows; r++)
			free(tmp[r]);
		done += rows;
	}
	return rc;
}

/* Runs the pending jobs in the open transaction; on an error returns it
 * with *bad at the first job of the failing step. */
static int run_all(sql_conn *sc, pconn *c, pjob **jobs, size_t n)
{
	const bool multi = sc->drv->dialect->msg_insert_head != NULL;
	for (size_t i = 0; i < n;) {
		if (jobs[i]->status != PJOB_PENDING) {
			i++;
			continue;
		}
		size_t k = i;
		if (multi)
			while (k < n && jobs[k]->status == PJOB_PENDING && is_store(jobs[k]))
				k++;
		int rc = k - i >= 2 ? store_run(sc, c, jobs + i, k - i) : sql_run_job(sc, c, jobs[i]);
		if (rc != SQLR_OK)
			return rc;
		i = k - i >= 2 ? k : i + 1;
	}
	return SQLR_OK;
}

/* 0 to retry on this connection, -1 to reopen it first */
static int retry_all(pjob **jobs, size_t n, int rc)
{
	for (size_t i = 0; i < n; i++)
		presult_clear(jobs[i]->result);
	mark(jobs, n, PJOB_RETRY);
	return rc == SQLR_RETRY ? 0 : -1;
}

int sql_run_batch(pconn *c, pjob **jobs, size_t n)
{
	sql_conn *sc = (sql_conn *)c;
	const sql_driver *d = sc->drv;
	int rc = d->begin(c);
	if (rc != SQLR_OK)
		return retry_all(jobs, n, rc); /* FAIL too: reopen the connection */
	rc = run_all(sc, c, jobs, n);
	if (rc == SQLR_OK) {
		rc = d->commit(c);
		if (rc == SQLR_OK) {
			mark(jobs, n, PJOB_OK);
			return 0;
		}
		d->rollback(c);
		return retry_all(jobs, n, rc);
	}
	d->rollback(c);
	if (sql_rc_retryable(rc))
		return retry_all(jobs, n, rc);
	for (size_t i = 0; i < n; i++)
		presult_clear(jobs[i]->result);
	/* a permanent failure: run each job on its own so only the bad one fails */
	for (size_t i = 0; i < n; i++) {
		pjob *j = jobs[i];
		if (j->status != PJOB_PENDING)
			continue;
		rc = d->begin(c);
		if (rc != SQLR_OK)
			return retry_all(jobs + i, n - i, rc == SQLR_RETRY ? rc : SQLR_LOST);
		rc = sql_run_job(sc, c, j);
		if (rc == SQLR_OK)
			rc = d->commit(c);
		if (rc == SQLR_OK) {
			j->status = PJOB_OK;
			continue;
		}
		d->rollback(c);
		presult_clear(j->result);
		if (sql_rc_retryable(rc))
			return retry_all(jobs + i, n - i, rc);
		j->status = PJOB_FAILED;
	}
	return 0;
}

const char *const sql_payload_encodings[] = {"binary", "base64", NULL};

int sql_payload_in(sql_conn *sc, const kmq_msg *m, sql_val *out, char **tmp)
{
	*tmp = NULL;
	if (!sc->payload_base64) {
		*out = SQLV_B(m->payload.p, m->payload.len);
		return 0;
	}
	char *b = malloc(((size_t)m->payload.len + 2) / 3 * 4 + 1);
	if (!b)
		return -1;
	int n = EVP_EncodeBlock((unsigned char *)b, m->payload.p, (int)m->payload.len);
	*tmp = b;
	*out = SQLV_T(b, (size_t)n);
	return 0;
}

sql_val sql_payload_out(sql_conn *sc, sql_val col, char **tmp)
{
	*tmp = NULL;
	if (!sc->payload_base64 || col.type == SQLV_NULL || col.type == SQLV_INT || col.len % 4 ||
	    col.len > INT_MAX)
		return col;
	unsigned char *b = malloc(col.len / 4 * 3 + 1);
	if (!b)
		return col;
	int n = EVP_DecodeBlock(b, col.p, (int)col.len);
	if (n < 0) {
		free(b);
		return col;
	}
	/* EVP_DecodeBlock counts the padding as zero bytes */
	const char *p = col.p;
	if (col.len && p[col.len - 1] == '=')
		n--;
	if (col.len > 1 && p[col.len - 2] == '=')
		n--;
	*tmp = (char *)b;
	return SQLV_B(b, (size_t)n);
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
	/* Only an ASCII byte below 0x7F is incremented, so both bounds stay
	 * valid UTF-8 (PostgreSQL and MySQL refuse text that is not): the
	 * non-ASCII tail of the prefix is cut, which widens the range - rows
	 * are confirmed by the broker's matcher anyway. */
	uint32_t k = n;
	while (k > 0 && (uint8_t)h[k - 1] >= 0x7F)
		k--;
	if (k == 0)
		return false; /* no ASCII byte to bound it: treat as every topic */
	h[k - 1] = (char)((uint8_t)h[k - 1] + 1);
	*hi = (mqtt_str){(const uint8_t *)h, k};
	return true;
}

int sql_exec_builtin(sql_conn *sc, pconn *c, int k, const sql_val *v, int nv, sql_row_fn cb,
                     void *ud)
{
	const sql_dialect *d = sc->drv->dialect;
	const char *map = d->argmap[k];
	if (map) {
		sql_val mv[16];
		int n = 0;
		for (; map[n] && n < 16; n++) {
			int from = map[n] - '0';
			mv[n] = from < nv ? v[from] : SQLV_NUL;
		}
		return sc->drv->exec(c, &d->stmt[k], d->stmt[k], mv, n, cb, ud);
	}
	return sc->drv->exec(c, &d->stmt[k], d->stmt[k], v, nv, cb, ud);
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
