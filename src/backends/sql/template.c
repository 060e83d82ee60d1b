/*
 * template.c - raw SQL actions: `${var}` compiled once into placeholders.
 *
 * The spec's raw actions look like
 *   insert into conn(clientid) values(${clientid})
 * Each ${name} becomes a placeholder bound to that value when the job runs,
 * so a client id or payload full of quotes, backslashes, NUL bytes or SQL is
 * stored verbatim and never executed.
 *
 * The compiler is a small lexer of the dialect's SQL, enough to tell code
 * from data: quoted literals and identifiers, `-- ...` and block comments.
 * In code it refuses what would make the bound values disagree with the
 * ${name}s (a value is bound to each placeholder in order, so one parameter
 * of SQL's own would take the value meant for the next ${name} and shift all
 * the others), and a second statement (SQLite prepares the first statement
 * of a text and ignores the rest, so it would silently never run). The text
 * is otherwise copied verbatim: the database sees comments and a trailing
 * ';' as written.
 *
 * Rules by dialect. The placeholder style names the dialect (sql.h's
 * sql_tmpl_compile takes only it):
 *   '?'  SQLite (the only '?' backend compiled in). Its parameters are `?`,
 *        `?NNN`, and `:name`, `@name`, `#name`, `$name` (a name is letters,
 *        digits, '_', '$' or bytes >= 0x80); a '$' inside a word (`a$b`,
 *        `5$`) is part of the word, not a parameter. Quotes: '...' and
 *        "..." and `...` (a doubled quote inside is the character), and
 *        [...] (SQLite's bracketed identifiers, ended by the first ']').
 *        Block comments do not nest.
 *   '$'  PostgreSQL. Its only parameter syntax on the server is `$N`. `?`,
 *        `?|`, `?&` are jsonb operators, `::` is a cast, `@` an operator
 *        and `:name` a psql (client-side) variable that never reaches the
 *        server: all of them are kept as written. It also has dollar-quoted
 *        strings ($$...$$, $tag$...$tag$), E'...' strings in which a
 *        backslash escapes the next character, and nested block comments.
 *   'm'  MySQL / MariaDB (SQL_LEX_MYSQL; placeholders are '?'). Its only
 *        parameter is `?`; `@var` and `@@var` are variables, `:` and `$`
 *        ordinary characters. Quotes: '...' and "..." in which a backslash
 *        escapes the next character (the server's default sql_mode; with
 *        NO_BACKSLASH_ESCAPES a string ending in a backslash would be read
 *        differently) and a doubled quote is the character; `...` names.
 *        Comments: "#" and "-- " to the end of the line ("--" must be
 *        followed by a space or control character: "1--1" is arithmetic),
 *        and block comments, which do not nest. Executable comments
 *        (a block comment opening with '!' or "M!") are refused: the
 *        server runs their contents, so a '?' inside would be a parameter.
 *
 * Refused, each with its offset in the statement: an unknown ${name}, "${"
 * without "}", a ${name} inside quotes (it would be text, not a parameter:
 * remove the quotes) or inside a comment (it would never be bound, although
 * it reads as if it were used), SQL's own parameters, a second statement
 * after ';' (a ';' followed only by spaces, comments and more ';' is fine),
 * a ${name} that would merge with its neighbour once replaced (followed by a
 * digit: "?1", "$11"; PostgreSQL: followed by a letter, after a word as in
 * "x$1", or touching a dollar quote as in "$${"), an unterminated quote or
 * block comment, and a text with no SQL in it.
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

/* ---------------------------------------------------------------- the lexer */

static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static bool is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

/* A character of a word (identifier, keyword, parameter name): the same set
 * for SQLite (its IdChar) and PostgreSQL (ident_cont). Locale-free. */
static bool is_word(unsigned char c) { return is_alpha(c) || is_digit(c) || c == '$'; }

static bool is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* The first "${" in src[from, to), or SIZE_MAX. */
static size_t find_var(const char *src, size_t from, size_t to)
{
	for (size_t k = from; k + 1 < to; k++)
		if (src[k] == '$' && src[k + 1] == '{')
			return k;
	return SIZE_MAX;
}

/* The end (one past "*" "/") of the block comment at i, or SIZE_MAX if it is
 * not closed. PostgreSQL's nest; SQLite's end at the first close. */
static size_t block_comment_end(const char *src, size_t len, size_t i, bool nest)
{
	int depth = 1;
	for (size_t j = i + 2; j + 1 < len;) {
		if (src[j] == '*' && src[j + 1] == '/') {
			j += 2;
			if (--depth == 0)
				return j;
		} else if (nest && src[j] == '/' && src[j + 1] == '*') {
			j += 2;
			depth++;
		} else {
			j++;
		}
	}
	return SIZE_MAX;
}

/* PostgreSQL: the length of the dollar-quote delimiter ($$ or $tag$) at i,
 * or 0 if there is none. */
static size_t dollar_tag(const char *src, size_t len, size_t i)
{
	size_t j = i + 1;
	if (j < len && is_alpha((unsigned char)src[j])) {
		while (j < len && (is_alpha((unsigned char)src[j]) || is_digit((unsigned char)src[j])))
			j++;
	}
	return j < len && src[j] == '$' ? j - i + 1 : 0;
}

static const char why_params[] =
	"use ${name} for values (a parameter of SQL's own would take the value meant for a "
	"${...} and shift the rest)";

int sql_tmpl_compile(const char *src, char placeholder, sql_tmpl *out, char *err, size_t errlen)
{
	size_t len = strlen(src);
	const bool pg = placeholder == SQL_LEX_PGSQL;
	const bool my = placeholder == SQL_LEX_MYSQL;
	memset(out, 0, sizeof(*out));
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
	bool code = false;      /* some SQL seen, not only spaces, comments and ';' */
	size_t semi = SIZE_MAX; /* the ';' that ended the statement */
	for (size_t i = 0; i < len;) {
		unsigned char ch = (unsigned char)src[i];
		size_t end = i + 1; /* one past what is copied as it is */
		bool comment = false;
		/* src[len] is the NUL, so src[i + 1] can always be read */
		if ((ch == '-' && src[i + 1] == '-' &&
		     (!my || src[i + 2] == 0 || (unsigned char)src[i + 2] <= ' ')) ||
		    (my && ch == '#')) {
			/* MySQL: "--" only before a space or control character ("1--1"
			 * is arithmetic), and "#" */
			comment = true;
			end = i + 1;
			while (end < len && src[end] != '\n')
				end++;
		} else if (ch == '/' && src[i + 1] == '*') {
			if (my && (src[i + 2] == '!' || (src[i + 2] == 'M' && src[i + 3] == '!'))) {
				/* the server runs what is inside: a '?' there would be a
				 * parameter this lexer never saw */
				snprintf(err, errlen,
				         "a MySQL executable comment (/*! ... */) at offset %zu: write its "
				         "SQL plainly",
				         i);
				goto fail;
			}
			comment = true;
			end = block_comment_end(src, len, i, pg);
			if (end == SIZE_MAX) {
				snprintf(err, errlen, "\"/*\" without \"*/\" at offset %zu", i);
				goto fail;
			}
		} else if (is_space(ch)) {
			/* one byte */
		} else if (ch == ';') {
			if (semi == SIZE_MAX)
				semi = i;
		} else if (semi != SIZE_MAX) {
			snprintf(err, errlen,
			         "a second statement at offset %zu, after the ';' at offset %zu: only the "
			         "first would run; give each statement its own string in the list",
			         i, semi);
			goto fail;
		} else if (ch == '\'' || ch == '"' || ch == '`' || (!pg && !my && ch == '[')) {
			/* a quoted literal or identifier */
			char close = ch == '[' ? ']' : (char)ch;
			bool backslash = (my && ch != '`') ||
			                 (pg && ch == '\'' && i > 0 && (src[i - 1] == 'E' || src[i - 1] == 'e') &&
			                  (i < 2 || !is_word((unsigned char)src[i - 2])));
			size_t j = i + 1;
			for (;;) {
				if (j >= len) {
					snprintf(err, errlen, "unterminated quote %c", ch);
					goto fail;
				}
				if (backslash && src[j] == '\\' && j + 1 < len &&
				    !(src[j + 1] == '$' && src[j + 2] == '{')) {
					j += 2; /* the escaped character, even a quote */
					continue;
				}
				if (backslash && src[j] == '\\' && j + 1 < len)
					j++; /* "\${": refused below like any ${ in quotes */
				if (src[j] == '$' && src[j + 1] == '{') {
					snprintf(err, errlen,
					         "${...} inside a quoted %s at offset %zu: remove the quotes, values "
					         "are bound as parameters",
					         ch == '\'' ? "string" : "name", j);
					goto fail;
				}
				if (src[j] == close) {
					if (close != ']' && src[j + 1] == close) { /* doubled: the character */
						j += 2;
						continue;
					}
					break;
				}
				j++;
			}
			end = j + 1;
			code = true;
		} else if (ch == '$' && src[i + 1] == '{') {
			/* ${name} */
			if (pg && i > 0 && is_word((unsigned char)src[i - 1])) {
				/* "x$1" would be one name to PostgreSQL, not x and $1 */
				snprintf(err, errlen,
				         "${...} at offset %zu right after a name or number: put a space "
				         "before it",
				         i);
				goto fail;
			}
			const char *close = memchr(src + i + 2, '}', len - i - 2);
			if (!close) {
				snprintf(err, errlen, "\"${\" without \"}\" at offset %zu", i);
				goto fail;
			}
			size_t nlen = (size_t)(close - (src + i + 2));
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
			unsigned char next = (unsigned char)close[1];
			if (is_digit(next) || (pg && is_alpha(next))) {
				/* "?1" is SQLite's parameter 1 and "$11" PostgreSQL's 11th;
				 * "$1x" is junk to PostgreSQL */
				snprintf(err, errlen,
				         "${...} at offset %zu is followed by a %s: put a space after it", i,
				         is_digit(next) ? "digit" : "letter");
				goto fail;
			}
			if (nv >= 65535) {
				snprintf(err, errlen, "too many variables");
				goto fail;
			}
			vars[nv++] = (uint8_t)var;
			if (pg)
				o += (size_t)sprintf(text + o, "$%u", nv);
			else
				text[o++] = '?';
			i = (size_t)(close - src) + 1;
			code = true;
			continue;
		} else if (!pg && ch == '?') {
			size_t j = i + 1;
			while (is_digit((unsigned char)src[j]))
				j++;
			if (j == i + 1)
				snprintf(err, errlen, "a bare '?' at offset %zu: %s", i, why_params);
			else
				snprintf(err, errlen, "SQL's own parameter \"%.*s\" at offset %zu: %s",
				         (int)(j - i > 40 ? 40 : j - i), src + i, i, why_params);
			goto fail;
		} else if ((!pg && !my && (ch == ':' || ch == '@' || ch == '#' || ch == '$') &&
		            is_word((unsigned char)src[i + 1]) &&
		            (ch != '$' || i == 0 || !is_word((unsigned char)src[i - 1]))) ||
		           (pg && ch == '$' && is_digit((unsigned char)src[i + 1]) &&
		            (i == 0 || !is_word((unsigned char)src[i - 1])))) {
			/* SQLite's :name @name #name $name (not a '$' inside a word);
			 * PostgreSQL's $N (not "a$1", a word) */
			size_t j = i + 1;
			while (j < len && (pg ? is_digit((unsigned char)src[j]) : is_word((unsigned char)src[j])))
				j++;
			snprintf(err, errlen, "SQL's own parameter \"%.*s\" at offset %zu: %s",
			         (int)(j - i > 40 ? 40 : j - i), src + i, i, why_params);
			goto fail;
		} else if (pg && ch == '$' && (i == 0 || !is_word((unsigned char)src[i - 1])) &&
		           dollar_tag(src, len, i)) {
			/* PostgreSQL's dollar-quoted string: $tag$ ... $tag$ */
			size_t tl = dollar_tag(src, len, i), j = i + tl;
			if (src[j] == '{') {
				/* "$${name}": is the '$' the quote's or the variable's? */
				snprintf(err, errlen,
				         "ambiguous \"%.*s{\" at offset %zu: put a space between the "
				         "dollar quote and the ${...}",
				         (int)(tl > 40 ? 40 : tl), src + i, i);
				goto fail;
			}
			for (;;) {
				if (j + tl > len) {
					snprintf(err, errlen, "unterminated dollar-quoted string %.*s at offset %zu",
					         (int)(tl > 40 ? 40 : tl), src + i, i);
					goto fail;
				}
				if (src[j] == '$' && src[j + 1] == '{') {
					snprintf(err, errlen,
					         "${...} inside a quoted string at offset %zu: remove the quotes, "
					         "values are bound as parameters",
					         j);
					goto fail;
				}
				if (memcmp(src + j, src + i, tl) == 0) {
					if (src[j + tl] == '{') {
						snprintf(err, errlen,
						         "ambiguous \"%.*s{\" at offset %zu: put a space between "
						         "the dollar quote and the ${...}",
						         (int)(tl > 40 ? 40 : tl), src + j, j);
						goto fail;
					}
					break;
				}
				j++;
			}
			end = j + tl;
			code = true;
		} else {
			code = true;
		}
		if (comment) {
			size_t at = find_var(src, i, end);
			if (at != SIZE_MAX) {
				snprintf(err, errlen,
				         "${...} inside a comment at offset %zu: it would never be bound; "
				         "remove it from the comment",
				         at);
				goto fail;
			}
		}
		memcpy(text + o, src + i, end - i);
		o += end - i;
		i = end;
	}
	if (!code) {
		snprintf(err, errlen, "an empty statement (no SQL outside spaces, comments and ';')");
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
