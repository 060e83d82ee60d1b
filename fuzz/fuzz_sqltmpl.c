/*
 * fuzz_sqltmpl.c - libFuzzer target for the `${var}` compiler of raw SQL
 * actions (src/backends/sql/template.c).
 *
 * Design
 * ------
 * The input, cut at its first NUL (the compiler reads a C string, as the
 * JSON reader hands it over), is compiled with both placeholder styles ('?'
 * for SQLite and MySQL, '$' for PostgreSQL). A refusal must leave nothing
 * allocated and give a message. An accepted statement must satisfy:
 *   - the compiled text equals the input byte for byte except that the k-th
 *     `${name}` became the k-th placeholder ("?" or "$k") and vars[k] is name:
 *     everything else, comments and quoted text included, was copied verbatim;
 *   - SQLite's own reading of the '?' text agrees: exactly nvars anonymous
 *     parameters (no :name, ?NNN ... of its own slipped through) and no
 *     second statement after the first;
 *   - appending a second statement, or a parameter in the dialect's own
 *     syntax, after it makes the compiler refuse it.
 */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/sql/sql.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sqlite3 *db;


/* S and the compiled T agree byte for byte except ${name} <-> placeholder k. */
static void check_roundtrip(const char *s, const sql_tmpl *t, char ph)
{
	size_t i = 0, j = 0;
	uint32_t k = 0;
	while (s[i]) {
		if (s[i] == '$' && s[i + 1] == '{') {
			if (k >= t->nvars) abort();
			char want[32];
			snprintf(want, sizeof(want), "${%s}", sql_var_name(t->vars[k]));
			if (strncmp(s + i, want, strlen(want))) abort();
			i += strlen(want);
			char p[16];
			if (ph != '$') snprintf(p, sizeof(p), "?");
			else snprintf(p, sizeof(p), "$%u", k + 1);
			if (strncmp(t->text + j, p, strlen(p))) abort();
			j += strlen(p);
			k++;
			continue;
		}
		if (s[i] != t->text[j]) abort();
		i++, j++;
	}
	if (t->text[j] || k != t->nvars) abort();
}

static int compiles(const char *s, char ph, char *err)
{
	sql_tmpl t;
	int rc = sql_tmpl_compile(s, ph, &t, err, 256);
	if (rc == 0) sql_tmpl_free(&t);
	else if (t.text || t.vars || t.nvars || !err[0] || strnlen(err, 256) == 256) abort();
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *src = malloc(size + 1);
	memcpy(src, data, size);
	src[size] = 0;
	size_t len = strlen(src);
	char *more = malloc(len + 32);
	for (int st = 0; st < 3; st++) {
		/* SQLite, PostgreSQL, MySQL (SQL_LEX_MYSQL) */
		char ph = st == 0 ? '?' : st == 1 ? '$' : 'm';
		sql_tmpl t;
		char err[256] = "";
		if (sql_tmpl_compile(src, ph, &t, err, sizeof(err)) != 0) {
			if (t.text || t.vars || t.nvars || !err[0]) abort();
			continue;
		}
		check_roundtrip(src, &t, ph);
		if (ph == '?') {
			/* SQLite's own reading of the text agrees: nvars anonymous
			 * parameters, and nothing after the one statement */
			if (!db && sqlite3_open(":memory:", &db)) abort();
			sqlite3_stmt *st = NULL;
			const char *tail = NULL;
			if (sqlite3_prepare_v2(db, t.text, -1, &st, &tail) == SQLITE_OK && st) {
				if (sqlite3_bind_parameter_count(st) != (int)t.nvars) abort();
				for (int k = 1; k <= (int)t.nvars; k++)
					if (sqlite3_bind_parameter_name(st, k)) abort();
				sqlite3_finalize(st);
				while (tail && *tail) {
					sqlite3_stmt *s2 = NULL;
					const char *t2 = NULL;
					if (sqlite3_prepare_v2(db, tail, -1, &s2, &t2) != SQLITE_OK) break;
					if (s2) abort(); /* a second statement was accepted */
					if (t2 == tail) break;
					tail = t2;
				}
			}
		}
		sql_tmpl_free(&t);
		/* whatever was accepted is one closed statement: a second one after
		 * it, or a parameter of the dialect's own, is refused */
		snprintf(more, len + 32, "%s\n;select 1", src);
		if (compiles(more, ph, err) == 0 || !strstr(err, "second statement")) abort();
		snprintf(more, len + 32, "%s\n%s", src, st == 1 ? "$1" : "?");
		if (compiles(more, ph, err) == 0) abort();
	}
	free(more);
	free(src);
	return 0;
}
