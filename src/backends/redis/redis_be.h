/*
 * redis_be.h - the Redis backend's internals, shared by its files:
 *   redis.c    pool keys, connecting (Sentinel included), the pipeline, run_batch
 *   clients.c  on_client_connected / on_client_disconnected
 *   subs.c     on_subscribe_lookup
 *   msgs.c     on_message_publish / _store, the fetches, the acknowledgements
 *   retain.c   on_message_retain / on_retain_delete / on_retain_lookup
 *   raw.c      {"commands": [...]} actions
 *   channel.c  the subscription channel (a service of the pool)
 *
 * Design
 * ------
 * Each pool connection is a framework pool thread holding one blocking
 * hiredis context (hiredis 0.14 has no timeouts on its async API, and a
 * blocking context driven by a thread of its own never holds up an I/O
 * worker). A batch is pipelined: every write command of every job is
 * appended to the output buffer, and the replies are read in one pass at
 * the end (or before a lookup, which needs answers to go on). Each reply is
 * charged to the job that sent the command, so one failing command fails its
 * job alone. The built-in functions only use commands that are idempotent
 * (HSET, SET, ZADD, SADD, DEL, EXPIRE, and two scripts that only move state
 * forward), so a batch replayed after a lost connection writes the same
 * state again, never a different one.
 *
 * Key layout: the spec's (mqtt:client:, mqtt:node:, mqtt:msg:, mqtt:retain:,
 * mqtt:acked:, mqtt:sub:) plus three of keepmq's own: mqtt:owner:{clientid}
 * (the node of the client's latest connection, so a late disconnect from an
 * old node cannot mark a moved client offline) and the sets mqtt:index:msg
 * and mqtt:index:retain (the topics with stored or retained messages, so a
 * wildcard subscription finds them without scanning the key space).
 */
#ifndef KEEPMQ_REDIS_BE_H
#define KEEPMQ_REDIS_BE_H

#include <hiredis/hiredis.h>

#include "backends/sql/sql.h" /* the ${var} values and message-id helpers every backend shares */
#include "persist/persist.h"

extern const backend_type redis_backend;

typedef struct redis_pool_cfg {
	char *server;   /* host:port, or sentinels host:port[,host:port...] */
	char *sentinel; /* master name: server lists sentinels */
	int64_t database;
	char *username;
	char *password;
	char *channel;
	bool channel_store;
	uint64_t connect_timeout_ms;
	uint64_t command_timeout_ms;
} redis_pool_cfg;

/* Job outcomes while a batch runs (worst wins). */
enum { RJ_OK = 0, RJ_FAIL = 1, RJ_RETRY = 2 };

typedef struct rpend {
	uint32_t job;
} rpend;

typedef struct rjob {
	uint32_t left; /* replies not yet read */
	uint8_t outcome;
} rjob;

struct pconn {
	redisContext *rc;
	const redis_pool_cfg *cfg;
	const persist_host *host;
	char err[256];
	rpend *pend; /* replies owed, in order */
	size_t npend, pcap;
	rjob *js; /* per job of the running batch */
	size_t jscap;
	pjob **jobs;
	char sha_ack[41];  /* the read-position script */
	char sha_disc[41]; /* the disconnect script */
	bool broken;       /* a NOSCRIPT or protocol surprise: reconnect after this batch */
};

/* ---------------------------------------------------------------- arguments */

#define RARGS_MAX 64

/* The arguments of one command. Text made for it (keys) is malloc'd and
 * freed by ra_free; other arguments point at the caller's memory. */
typedef struct rargs {
	int n;
	const char *v[RARGS_MAX];
	size_t l[RARGS_MAX];
	char *owned[RARGS_MAX];
	int nowned;
	bool oom;
} rargs;

void ra_init(rargs *a);
void ra_add(rargs *a, const void *p, size_t n);
void ra_str(rargs *a, const char *s);
/* prefix + value (+ ":" + value2 if p2) as one argument */
void ra_key(rargs *a, const char *prefix, const void *p, size_t n, const void *p2, size_t n2);
/* a decimal number */
void ra_int(rargs *a, int64_t v);
/* The fields of a message hash (mqtt:msg:, mqtt:retain:): id from qos
 * topic retain payload ts. `id` (32 hex) must live until the command is
 * appended. */
void ra_msg_fields(rargs *a, const kmq_msg *m, const char *id, bool retain);
void ra_free(rargs *a);

/* ---------------------------------------------------------------- the pipeline */

/* Appends a command charged to job `job` (its reply is read by rds_flush).
 * Returns 0, or -1 when out of memory (the job is then RETRY). */
int rds_append(pconn *c, uint32_t job, rargs *a);
/* Reads every reply owed. Returns 0, or -1 if the connection failed (the
 * jobs whose replies were not read are RETRY). */
int rds_flush(pconn *c);
/* A round trip (after rds_flush): the reply, freed by the caller with
 * freeReplyObject; NULL if the connection failed (c->err says why). Error
 * replies are returned as replies. */
redisReply *rds_call(pconn *c, rargs *a);
/* How an error reply counts: RJ_FAIL (the command's fault) or RJ_RETRY. */
int rds_error_class(const redisReply *r);
/* Charges an outcome to a job. */
void rds_outcome(pconn *c, uint32_t job, int outcome, const char *why, size_t whylen);

/* Opens an authenticated context on the pool's master with its database
 * selected (asking the sentinels first when `sentinel` is set). NULL with
 * a message on failure. */
redisContext *rds_connect(const redis_pool_cfg *cfg, char *err, size_t errlen);

/* Sends n commands as one pipeline and reads their replies into out[0..n)
 * (freed by the caller with freeReplyObject). Returns 0, or -1 if the
 * connection failed (out is then all NULL). */
int rds_pipeline(pconn *c, rargs *cmds, size_t n, redisReply **out);
/*
 * HGETALL of the hashes <prefix><key> for k in [0, n), where key(ud, k, &p,
 * &len) names the k-th, sent in pipelined chunks (rds_pipeline). Each reply
 * goes to on_reply(ud, k, reply) in order; the reply is freed after the
 * call. Returns 0, -1 if out of memory or the connection failed (c->err
 * says which; the replies of the failing chunk are not passed on).
 */
typedef void (*rds_key_fn)(void *ud, size_t k, const void **p, size_t *len);
typedef void (*rds_reply_fn)(void *ud, size_t k, redisReply *reply);
int rds_hgetall_many(pconn *c, const char *prefix, size_t n, rds_key_fn key,
                     rds_reply_fn on_reply, void *ud);

/* The topics in an index set (K_IDX_MSG, K_IDX_RETAIN) that match a
 * wildcard filter, read with SSCAN and confirmed with the broker's matcher.
 * *topics is a malloc'd array of malloc'd strings (free with
 * rds_topics_free). Returns 0, or -1 if the connection failed; on a reply
 * error the job's outcome is set and 0 returned with what was found. */
typedef struct rtopic {
	char *p;
	uint32_t len;
} rtopic;
int rds_matching_topics(pconn *c, uint32_t job, const char *index, mqtt_str filter,
                        rtopic **topics, size_t *n);
void rds_topics_free(rtopic **topics, size_t n);

/* A hash reply's field, or NULL. */
const redisReply *rds_field(const redisReply *h, const char *name);
/* A kmq_msg from a message hash (HGETALL reply); NULL if it is not one. */
kmq_msg *rds_hash_msg(const redisReply *h, bool retained);

/* Key prefixes */
#define K_CLIENT "mqtt:client:"
#define K_OWNER "mqtt:owner:"
#define K_NODE "mqtt:node:"
#define K_MSG "mqtt:msg:"
#define K_RETAIN "mqtt:retain:"
#define K_ACKED "mqtt:acked:"
#define K_SUB "mqtt:sub:"
#define K_IDX_MSG "mqtt:index:msg"
#define K_IDX_RETAIN "mqtt:index:retain"

/* ---------------------------------------------------------------- functions */

enum redis_func {
	RF_CLIENT_CONNECTED,
	RF_CLIENT_DISCONNECTED,
	RF_SUBSCRIBE_LOOKUP,
	RF_FETCH_QUEUE,
	RF_FETCH_PUBSUB,
	RF_RETAIN_LOOKUP,
	RF_MESSAGE_PUBLISH,
	RF_MESSAGE_STORE,
	RF_MESSAGE_RETAIN,
	RF_RETAIN_DELETE,
	RF_ACKED_QUEUE,
	RF_ACKED_PUBSUB,
	RF_ACKED_DELETE,
	RF__COUNT
};

/* Each appends its commands (writes) or runs its round trips (lookups).
 * Returns 0, or -1 if the connection failed. */
int redis_client_connected(pconn *c, uint32_t i, pjob *j);    /* clients.c */
int redis_client_disconnected(pconn *c, uint32_t i, pjob *j); /* clients.c */
int redis_subscribe_lookup(pconn *c, uint32_t i, pjob *j);    /* subs.c */
int redis_message_store(pconn *c, uint32_t i, pjob *j);       /* msgs.c */
int redis_message_fetch(pconn *c, uint32_t i, pjob *j, bool queue); /* msgs.c */
int redis_message_acked(pconn *c, uint32_t i, pjob *j, bool queue); /* msgs.c */
int redis_acked_delete(pconn *c, uint32_t i, pjob *j);        /* msgs.c */
int redis_message_retain(pconn *c, uint32_t i, pjob *j);      /* retain.c */
int redis_retain_delete(pconn *c, uint32_t i, pjob *j);       /* retain.c */
int redis_retain_lookup(pconn *c, uint32_t i, pjob *j);       /* retain.c */

/* raw.c */
int redis_raw_compile(const char *const *texts, size_t n, void **out, char *err, size_t errlen);
void redis_raw_free(void *raw);
int redis_raw_run(pconn *c, uint32_t i, pjob *j);
/* The number of commands of a compiled action, and the arguments of its
 * command k for a job (scratch: RARGS_MAX slots for formatted numbers).
 * Returns 0, or -1 (a->oom set) if they could not be built. Free with
 * ra_free. (Used by redis_raw_run and the fuzz target.) */
uint32_t redis_raw_ncmds(const void *raw);
int redis_raw_args(const void *raw, uint32_t k, const pjob *j, const char *node, rargs *a,
                   char (*scratch)[48]);

/* channel.c: the pool service */
int redis_channel_start(const void *pool_cfg, const char *pool_name, const persist_host *host,
                        void **svc, char *err, size_t errlen);
void redis_channel_stop(void **svc);
void redis_channel_metrics(void *svc, pmetric_put put, void *ud);
/* Parses one channel message. Returns 0 and fills the out values (pointing
 * into a jansson object freed by the caller via *root), or -1 with why. */
typedef struct chan_event {
	bool unsubscribe;
	const char *clientid;
	size_t cid_len;
	const char *topic;
	size_t topic_len;
	int qos;
} chan_event;
int redis_channel_parse(const char *msg, size_t len, chan_event *ev, void **root, char *why,
                        size_t whylen);
void redis_channel_event_free(void **root);

#endif
