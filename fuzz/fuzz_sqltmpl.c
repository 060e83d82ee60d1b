/*
 * fuzz_sqltmpl.c - libFuzzer target for the `${var}` compiler of raw SQL
 * actions (src/backends/sql/template.c).
 *
 * Design
 * ------
 * The input, cut at its first NUL (the compiler reads a C string, as the
 * JSON reader hands it over), is compiled with both placeholder styles.
 * Whatever the input, a refusal must leave nothing allocated and a bounded
 * message. An accepted statement must satisfy:
 *   - the text is a NUL-terminated string no longer than the buffer the
 *     compiler sized for it, and every variable is a known one;
 *   - nvars <= len / 6 (the shortest `${var}`, `${qos}`, is 6 bytes);
 *   - '?' style: putting `${name}` back for each '?' outside quotes (quotes
 *     tracked as the compiler does: ' " `, doubled inside) gives back the
 *     input exactly - so placeholders and variables match one to one, in
 *     order, and everything else was copied verbatim;
 *   - '$' style accepts whatever '?' style accepts (it refuses a subset:
 *     no bare '?' rule), with the same variables, and its text holds
 *     "$1".."$nvars" in order;
 *   - sql_raw_compile of the input as a one-statement action agrees.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/sql/sql.h"

/* Rebuilds the source of a '?'-style template; returns a malloc'd string. */
static char *decompile(const sql_tmpl *t)
{
	size_t tl = strlen(t->text);
	size_t cap = tl + (size_t)t->nvars * 16 + 1;
	char *out = malloc(cap);
	if (!out)
		abort();
	size_t o = 0, k = 0;
	char quote = 0;
	for (size_t i = 0; i < tl;) {
		char ch = t->text[i];
		if (quote) {
			if (ch == quote && i + 1 < tl && t->text[i + 1] == quote) {
				out[o++] = ch;
				out[o++] = ch;
				i += 2;
				continue;
			}
			if (ch == quote)
				quote = 0;
			out[o++] = ch;
			i++;
			continue;
		}
		if (ch == '\'' || ch == '"' || ch == '`') {
			quote = ch;
			out[o++] = ch;
			i++;
			continue;
		}
		if (ch == '?') {
			if (k >= t->nvars)
				abort(); /* more placeholders than variables */
			o += (size_t)snprintf(out + o, cap - o, "${%s}", sql_var_name(t->vars[k++]));
			i++;
			continue;
		}
		out[o++] = ch;
		i++;
	}
	if (k != t->nvars)
		abort(); /* fewer placeholders than variables */
	out[o] = 0;
	return out;
}

static void check_common(const sql_tmpl *t, size_t len)
{
	if (!t->text || !t->vars)
		abort();
	if (strnlen(t->text, len * 2 + 16) == len * 2 + 16)
		abort();
	if (t->nvars > len / 6)
		abort();
	for (uint32_t i = 0; i < t->nvars; i++)
		if (t->vars[i] >= SV__COUNT)
			abort();
}

static void check_refused(const sql_tmpl *t, const char *err, size_t errlen)
{
	if (t->text || t->vars || t->nvars)
		abort();
	if (strnlen(err, errlen) == errlen || !err[0])
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *src = malloc(size + 1);
	if (!src)
		abort();
	memcpy(src, data, size);
	src[size] = 0;
	size_t len = strlen(src);

	sql_tmpl q, d;
	char eq[256], ed[256];
	eq[0] = ed[0] = 0;
	int rq = sql_tmpl_compile(src, '?', &q, eq, sizeof(eq));
	int rd = sql_tmpl_compile(src, '$', &d, ed, sizeof(ed));
	if (rq != 0 && rq != -1)
		abort();
	if (rd != 0 && rd != -1)
		abort();

	if (rq == 0) {
		check_common(&q, len);
		char *back = decompile(&q);
		if (strcmp(back, src) != 0)
			abort();
		free(back);
		if (rd != 0)
			abort(); /* '$' style refuses less than '?' style */
	} else {
		check_refused(&q, eq, sizeof(eq));
	}

	if (rd == 0) {
		check_common(&d, len);
		if (rq == 0) {
			if (d.nvars != q.nvars || memcmp(d.vars, q.vars, q.nvars) != 0)
				abort();
		}
		/* "$1" .. "$nvars" appear in order */
		const char *at = d.text;
		for (uint32_t i = 1; i <= d.nvars; i++) {
			char ph[16];
			snprintf(ph, sizeof(ph), "$%u", i);
			at = strstr(at, ph);
			if (!at)
				abort();
			at += strlen(ph);
		}
	} else {
		check_refused(&d, ed, sizeof(ed));
	}

	/* the same text as a one-statement raw action */
	const char *texts[1] = {src};
	void *raw = NULL;
	char er[300];
	int rr = sql_raw_compile(texts, 1, '?', &raw, er, sizeof(er));
	if ((rr == 0) != (rq == 0))
		abort();
	if (rr == 0) {
		const sql_raw *r = raw;
		if (r->n != 1 || strcmp(r->t[0].text, q.text) != 0 || r->t[0].nvars != q.nvars)
			abort();
		sql_raw_free(raw);
	} else if (raw) {
		abort();
	}

	if (rq == 0)
		sql_tmpl_free(&q);
	if (rd == 0)
		sql_tmpl_free(&d);
	free(src);
	return 0;
}
