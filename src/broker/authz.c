/*
 * authz.c - the broker's use of the password file and the ACL.
 *
 * Password checks are slow on purpose (PBKDF2), so they run on libuv's thread
 * pool; the connection pauses reading meanwhile. The request holds a
 * reference on the connection (conn.refs) so a client that disconnects
 * during the check cannot free it under the pool thread; the after-work
 * callback, on the worker thread, drops the reference and frees a
 * connection that closed meanwhile.
 */
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"

typedef struct pw_req {
	uv_work_t req;
	conn *c;
	passwd_db *db;
	int result;
	uint32_t ulen, pwlen, connect_len;
	uint8_t *connect; /* the CONNECT packet, handed to connect_auth_done */
	uint8_t data[];   /* user name then password */
} pw_req;

static void pw_work(uv_work_t *req)
{
	pw_req *r = req->data;
	r->result = passwd_db_check(r->db, r->data, r->ulen, r->data + r->ulen, r->pwlen);
}

static void pw_done(uv_work_t *req, int status)
{
	pw_req *r = req->data;
	conn *c = r->c;
	bool ok = status == 0 && r->result == 0;
	uint8_t *connect = r->connect;
	uint32_t len = r->connect_len;
	/* no copy of the password outlives the check */
	memset(r->data, 0, (size_t)r->ulen + r->pwlen);
	free(r);
	if (conn_unref(c)) { /* it closed meanwhile */
		memset(connect, 0, len);
		free(connect);
		return;
	}
	connect_auth_done(c, connect, len, ok);
}

int authz_check_password_async(conn *c, const mqtt_connect *ck, const uint8_t *packet,
                               uint32_t len)
{
	pw_req *r = malloc(sizeof(*r) + ck->username.len + ck->password.len);
	uint8_t *copy = malloc(len);
	if (!r || !copy)
		goto fail;
	memcpy(copy, packet, len);
	r->req.data = r;
	r->c = c;
	r->db = c->w->b->passwd;
	r->ulen = ck->username.len;
	r->pwlen = ck->password.len;
	r->connect = copy;
	r->connect_len = len;
	memcpy(r->data, ck->username.p, ck->username.len);
	memcpy(r->data + r->ulen, ck->password.p, ck->password.len);
	c->refs++;
	if (uv_queue_work(&c->w->loop, &r->req, pw_work, pw_done)) {
		c->refs--;
		goto fail;
	}
	return 0;
fail:
	free(r);
	free(copy);
	return -1;
}

static mqtt_str cid_of(const session *s) { return (mqtt_str){(const uint8_t *)s->client_id, s->cid_len}; }

bool authz_may_publish(const session *s, mqtt_str topic)
{
	const acl *a = s->w->b->acl;
	if (!a)
		return true;
	mqtt_str user = {(const uint8_t *)s->username, s->ulen};
	return acl_check(a, cid_of(s), s->username ? &user : NULL, topic, ACL_WRITE);
}

bool authz_may_receive(const session *s, mqtt_str topic)
{
	const acl *a = s->w->b->acl;
	if (!a)
		return true;
	mqtt_str user = {(const uint8_t *)s->username, s->ulen};
	return acl_check(a, cid_of(s), s->username ? &user : NULL, topic, ACL_READ);
}

int authz_filter(const session *s, mqtt_str filter)
{
	const acl *a = s->w->b->acl;
	if (!a)
		return ACL_FILTER_ALLOW;
	mqtt_str user = {(const uint8_t *)s->username, s->ulen};
	return acl_check_filter(a, cid_of(s), s->username ? &user : NULL, filter);
}
