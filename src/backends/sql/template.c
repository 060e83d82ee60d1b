/*
 * template.c - raw SQL actions: `${var}` compiled once into placeholders.
 *
 * The spec's raw actions look like
 *   insert into conn(clientid) values(${clientid})
 * Each ${name} becomes a placeholder bound to that value when the job runs,
 * so a client id or payload full of quotes, backslashes, NUL bytes or SQL is
 * stored verbatim and never executed. The compiler tracks quoted literals
 * and identifiers: a ${name} inside quotes would be text, not a parameter,
 * and is refused with a message saying to remove the quotes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/sql/sql.h"
#include "broker/message.h"

static const char *const var_names[SV__COUNT] = {
	"clientid", "username", "peerhost", "node",   "topic",
	"qos",      "msgid",    "payload",  "retain", "timestamp",
};

const char *sql_var_name(int var) { return var >= 0 && var < SV__COUNT ? var_names[var] : "?"; }

void sql_tmpl_free(sql_tmpl *t)
{
	free(t->text);
	free(t->vars);
	t->text = NULL;
	t->vars = NULL;
	t->nvars = 0;
}

int sql_tmpl_compile(const char *src, char placeholder, sql_tmpl *out, char *err, size_t errlen)
{
	size_t len = strlen(src);
	memset(out, 0, sizeof(*out));
	if (strspn(src, " \t\r\n") == len) {
		snprintf(err, errlen, "an empty statement");
		return -1;
	}
	/* each ${x} (at least 4 bytes) becomes at most "$65535" (6 bytes) */
	char *text = malloc(len * 2 + 16);
	uint8_t *vars = malloc(len / 4 + 1);
	if (!text || !vars) {
		free(text);
		free(vars);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	size_t o = 0;
	uint32_t nv = 0;
	char quote = 0; /* the quote character we are inside, or 0 */
	for (size_t i = 0; i < len;) {
		char ch = src[i];
		if (quote) {
			if (ch == '$' && i + 1 < len && src[i + 1] == '{') {
				snprintf(err, errlen,
				         "${...} inside a quoted %s at offset %zu: remove the quotes, values "
				         "are bound as parameters",
				         quote == '\'' ? "string" : "name", i);
				goto fail;
			}
			if (ch == quote) {
				if (i + 1 < len && src[i + 1] == quote) { /* doubled quote: literal */
					text[o++] = ch;
					text[o++] = ch;
					i += 2;
					continue;
				}
				quote = 0;
			}
			text[o++] = ch;
			i++;
			continue;
		}
		if (ch == '\'' || ch == '"' || ch == '`') {
			quote = ch;
			text[o++] = ch;
			i++;
			continue;
		}
		if (ch == '$' && i + 1 < len && src[i + 1] == '{') {
			const char *end = memchr(src + i + 2, '}', len - i - 2);
			if (!end) {
				snprintf(err, errlen, "\"${\" without \"}\" at offset %zu", i);
				goto fail;
			}
			size_t nlen = (size_t)(end - (src + i + 2));
			int var = -1;
			for (int k = 0; k < SV__COUNT; k++)
				if (strlen(var_names[k]) == nlen && memcmp(var_names[k], src + i + 2, nlen) == 0)
					var = k;
			if (var < 0) {
				snprintf(err, errlen,
				         "unknown variable ${%.*s} (known: clientid, username, peerhost, node, "
				         "topic, qos, msgid, payload, retain, timestamp)",
				         (int)(nlen > 40 ? 40 : nlen), src + i + 2);
				goto fail;
			}
			if (nv >= 65535) {
				snprintf(err, errlen, "too many variables");
				goto fail;
			}
			vars[nv++] = (uint8_t)var;
			if (placeholder == '$')
				o += (size_t)sprintf(text + o, "$%u", nv);
			else
				text[o++] = '?';
			i = (size_t)(end - src) + 1;
			continue;
		}
		if (ch == '?' && placeholder == '?') {
			snprintf(err, errlen, "a bare '?' at offset %zu: use ${name} for values", i);
			goto fail;
		}
		text[o++] = ch;
		i++;
	}
	if (quote) {
		snprintf(err, errlen, "unterminated quote %c", quote);
		goto fail;
	}
	text[o] = 0;
	out->text = text;
	out->vars = vars;
	out->nvars = nv;
	return 0;
fail:
	free(text);
	free(vars);
	return -1;
}

int sql_raw_compile(const char *const *texts, size_t n, char placeholder, void **out, char *err,
                    size_t errlen)
{
	sql_raw *r = calloc(1, sizeof(*r) + n * sizeof(sql_tmpl));
	if (!r) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		char e[256];
		if (sql_tmpl_compile(texts[i], placeholder, &r->t[i], e, sizeof(e))) {
			if (n > 1)
				snprintf(err, errlen, "statement %zu: %s", i + 1, e);
			else
				snprintf(err, errlen, "%s", e);
			r->n = (uint32_t)i;
			sql_raw_free(r);
			return -1;
		}
		r->n = (uint32_t)(i + 1);
	}
	*out = r;
	return 0;
}

void sql_raw_free(void *raw)
{
	sql_raw *r = raw;
	if (!r)
		return;
	for (uint32_t i = 0; i < r->n; i++)
		sql_tmpl_free(&r->t[i]);
	free(r);
}

sql_val sql_var_value(int var, const pjob *j, const char *node, char scratch[48])
{
	switch (var) {
	case SV_CLIENTID: return SQLV_T(j->clientid.p, j->clientid.len);
	case SV_USERNAME:
		return j->username.len ? SQLV_T(j->username.p, j->username.len) : SQLV_NUL;
	case SV_PEERHOST:
		return j->peerhost.len ? SQLV_T(j->peerhost.p, j->peerhost.len) : SQLV_NUL;
	case SV_NODE: return node ? SQLV_T(node, strlen(node)) : SQLV_NUL;
	case SV_TOPIC: return SQLV_T(j->topic.p, j->topic.len);
	case SV_QOS: return SQLV_I(j->qos);
	case SV_MSGID:
		if (!j->msg)
			return SQLV_NUL;
		msgid_to_hex(j->msg->id, scratch);
		return SQLV_T(scratch, 32);
	case SV_PAYLOAD: return j->msg ? SQLV_B(j->msg->payload.p, j->msg->payload.len) : SQLV_NUL;
	case SV_RETAIN: return SQLV_I(j->retain ? 1 : 0);
	case SV_TIMESTAMP: return SQLV_I((int64_t)j->ts_ms);
	}
	return SQLV_NUL;
}

int sql_raw_run(sql_conn *sc, pconn *c, pjob *j)
{
	const sql_raw *r = j->rule->raw;
	for (uint32_t i = 0; i < r->n; i++) {
		const sql_tmpl *t = &r->t[i];
		sql_val v[64];
		char scratch[64][48];
		sql_val *vp = t->nvars <= 64 ? v : malloc(t->nvars * sizeof(sql_val));
		char(*sp)[48] = t->nvars <= 64 ? scratch : malloc(t->nvars * 48);
		if (!vp || !sp) {
			if (vp != v)
				free(vp);
			if (sp != scratch)
				free(sp);
			return SQLR_RETRY;
		}
		for (uint32_t k = 0; k < t->nvars; k++)
			vp[k] = sql_var_value(t->vars[k], j, sc->host ? sc->host->node : NULL, sp[k]);
		int rc = sc->drv->exec(c, t, t->text, vp, (int)t->nvars, NULL, NULL);
		if (vp != v)
			free(vp);
		if (sp != scratch)
			free(sp);
		if (rc != SQLR_OK)
			return rc;
	}
	return SQLR_OK;
}
