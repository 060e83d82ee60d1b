/*
 * net.c - see net.h: the pool settings of the networked SQL backends and
 * their prepared-statement cache.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/common/funcs.h"
#include "backends/sql/net.h"

int sql_net_check(const void *cfgp, char *err, size_t errlen)
{
	const sql_net_cfg *cfg = cfgp;
	char host[256];
	int port;
	if (!cfg->server || backend_parse_addr(cfg->server, strlen(cfg->server), host, sizeof(host),
	                                       &port)) {
		snprintf(err, errlen, "server: \"%.100s\" is not host:port",
		         cfg->server ? cfg->server : "");
		return -1;
	}
	if (!cfg->database || !cfg->database[0]) {
		snprintf(err, errlen, "the pool needs a database (.database = name)");
		return -1;
	}
	if (!cfg->ssl && ((cfg->ssl_ca && cfg->ssl_ca[0]) || (cfg->ssl_cert && cfg->ssl_cert[0]) ||
	                  cfg->ssl_verify)) {
		snprintf(err, errlen, "ssl.* options are set but ssl is off (.ssl = on)");
		return -1;
	}
	if (cfg->ssl_verify && (!cfg->ssl_ca || !cfg->ssl_ca[0])) {
		snprintf(err, errlen, "ssl.verify needs the CA certificates (.ssl.cacertfile = path)");
		return -1;
	}
	if ((cfg->ssl_cert && cfg->ssl_cert[0]) != (cfg->ssl_key && cfg->ssl_key[0])) {
		snprintf(err, errlen, "ssl.certfile and ssl.keyfile go together");
		return -1;
	}
	return 0;
}

void sql_net_addr(const sql_net_cfg *cfg, char host[256], int *port)
{
	if (backend_parse_addr(cfg->server, strlen(cfg->server), host, 256, port)) {
		snprintf(host, 256, "127.0.0.1");
		*port = 0;
	}
}

sql_stmt_slot *sql_stmt_find(sql_stmt_cache *c, const void *key)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->v[i].key == key)
			return &c->v[i];
	return NULL;
}

sql_stmt_slot *sql_stmt_add(sql_stmt_cache *c, const void *key)
{
	if (c->n == c->cap) {
		size_t nc = c->cap ? c->cap * 2 : 32;
		sql_stmt_slot *nv = realloc(c->v, nc * sizeof(*nv));
		if (!nv)
			return NULL;
		c->v = nv;
		c->cap = nc;
	}
	sql_stmt_slot *s = &c->v[c->n++];
	memset(s, 0, sizeof(*s));
	s->key = key;
	return s;
}

void sql_stmt_clear(sql_stmt_cache *c, void (*drop)(void *stmt))
{
	for (size_t i = 0; i < c->n; i++) {
		if (drop && c->v[i].stmt)
			drop(c->v[i].stmt);
		free(c->v[i].types);
	}
	free(c->v);
	c->v = NULL;
	c->n = c->cap = 0;
}

int sql_net_each_statement(const char *script, int (*run)(void *ud, const char *stmt), void *ud)
{
	const char *p = script;
	while (*p) {
		const char *e = strstr(p, ";\n");
		size_t n = e ? (size_t)(e - p) : strlen(p);
		/* skip statements that are only spaces and -- comments */
		bool sql = false;
		for (const char *q = p; q < p + n; q++) {
			if (*q == '-' && q + 1 < p + n && q[1] == '-') {
				while (q < p + n && *q != '\n')
					q++;
			} else if (*q != ' ' && *q != '\n' && *q != '\t' && *q != '\r') {
				sql = true;
				break;
			}
		}
		if (sql) {
			char *s = strndup(p, n);
			if (!s)
				return -1;
			int rc = run(ud, s);
			free(s);
			if (rc)
				return rc;
		}
		p += n;
		if (e)
			p += 2;
	}
	return 0;
}
