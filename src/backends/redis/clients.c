/*
 * clients.c - on_client_connected / on_client_disconnected.
 *
 * Connected: HSET mqtt:client:{cid} state 1 online_at {ts} offline_at
 * undefined (the spec's fields, so its HGETALL example reads the same),
 * HSET mqtt:node:{node} {cid} {ts}, and SET mqtt:owner:{cid} {node}.
 *
 * Disconnected runs a script: the client leaves mqtt:node:{node}, and its
 * hash turns to state 0 only while mqtt:owner:{cid} still names this node.
 * On one node a client's events are queued in the order they happened, but
 * with two nodes sharing Redis the old node's disconnect of a client that
 * has moved can arrive after the new node's connect; the owner key makes it
 * leave the client online, where the original marked it offline.
 */
#include <stdio.h>
#include <string.h>

#include "backends/redis/redis_be.h"

static const char *node_of(pconn *c)
{
	return c->host && c->host->node ? c->host->node : "";
}

int redis_client_connected(pconn *c, uint32_t i, pjob *j)
{
	const char *node = node_of(c);
	char ts[24];
	int tl = snprintf(ts, sizeof(ts), "%llu", (unsigned long long)(j->ts_ms / 1000));
	rargs a;
	ra_init(&a);
	ra_str(&a, "HSET");
	ra_key(&a, K_CLIENT, j->clientid.p, j->clientid.len, NULL, 0);
	ra_str(&a, "state");
	ra_str(&a, "1");
	ra_str(&a, "online_at");
	ra_add(&a, ts, (size_t)tl);
	ra_str(&a, "offline_at");
	ra_str(&a, "undefined");
	rds_append(c, i, &a);

	ra_init(&a);
	ra_str(&a, "SET");
	ra_key(&a, K_OWNER, j->clientid.p, j->clientid.len, NULL, 0);
	ra_str(&a, node);
	rds_append(c, i, &a);

	ra_init(&a);
	ra_str(&a, "HSET");
	ra_key(&a, K_NODE, node, strlen(node), NULL, 0);
	ra_add(&a, j->clientid.p, j->clientid.len);
	ra_add(&a, ts, (size_t)tl);
	return rds_append(c, i, &a);
}

int redis_client_disconnected(pconn *c, uint32_t i, pjob *j)
{
	const char *node = node_of(c);
	char ts[24];
	int tl = snprintf(ts, sizeof(ts), "%llu", (unsigned long long)(j->ts_ms / 1000));
	rargs a;
	ra_init(&a);
	ra_str(&a, "EVALSHA");
	ra_add(&a, c->sha_disc, 40);
	ra_str(&a, "3");
	ra_key(&a, K_CLIENT, j->clientid.p, j->clientid.len, NULL, 0);
	ra_key(&a, K_OWNER, j->clientid.p, j->clientid.len, NULL, 0);
	ra_key(&a, K_NODE, node, strlen(node), NULL, 0);
	ra_add(&a, j->clientid.p, j->clientid.len);
	ra_str(&a, node);
	ra_add(&a, ts, (size_t)tl);
	return rds_append(c, i, &a);
}
