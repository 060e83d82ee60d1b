/*
 * test_sql_template.c - the SQL layer's pure helpers: the `${var}` compiler
 * of raw actions (template.c) and the text helpers of batch.c
 * (sql_prefix_range, sql_msgid_floor, sql_msgid_parse, sql_datetime).
 *
 * Design
 * ------
 * The compiler is checked on exact output: the statement text with '?' or
 * '$n' placeholders and, for each placeholder in order, the variable it
 * binds. Refusals are checked by substring of the message (the name, the
 * reason). Large inputs check that the output buffers are sized for the
 * worst case ('$' placeholders longer than the shortest `${var}`), which an
 * ASan build of this test turns into a hard failure.
 *
 * The helpers are checked against their contracts in sql.h and against
 * msgid_to_hex / msgid_next of broker/message.h, whose text form they read.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/sql/sql.h"
#include "broker/message.h"

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static char err[512];

/* Compiles src and expects success with exactly `text` and the variables. */
static void expect_compile(const char *src, char ph, const char *text, int nvars, ...)
{
	sql_tmpl t;
	err[0] = 0;
	int rc = sql_tmpl_compile(src, ph, &t, err, sizeof(err));
	if (rc)
		fprintf(stderr, "  compile of <%s> failed: %s\n", src, err);
	assert_int_equal(rc, 0);
	assert_non_null(t.text);
	assert_string_equal(t.text, text);
	assert_int_equal(t.nvars, nvars);
	va_list ap;
	va_start(ap, nvars);
	for (int i = 0; i < nvars; i++)
		assert_int_equal(t.vars[i], va_arg(ap, int));
	va_end(ap);
	sql_tmpl_free(&t);
	assert_null(t.text);
	assert_null(t.vars);
	assert_int_equal(t.nvars, 0);
}

/* Compiles src and expects a refusal whose message contains every
 * NULL-terminated substring. */
static void expect_refused(const char *src, char ph, ...)
{
	sql_tmpl t;
	memset(&t, 0x5a, sizeof(t));
	err[0] = 0;
	int rc = sql_tmpl_compile(src, ph, &t, err, sizeof(err));
	if (rc == 0)
		fprintf(stderr, "  <%s> compiled to <%s>\n", src, t.text);
	assert_int_equal(rc, -1);
	/* nothing is left allocated in out */
	assert_null(t.text);
	assert_null(t.vars);
	assert_int_equal(t.nvars, 0);
	va_list ap;
	va_start(ap, ph);
	for (const char *s = va_arg(ap, const char *); s; s = va_arg(ap, const char *)) {
		if (!strstr(err, s))
			fprintf(stderr, "  message <%s> lacks <%s>\n", err, s);
		assert_non_null(strstr(err, s));
	}
	va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* sql_tmpl_compile                                                         */
/* ------------------------------------------------------------------------ */

static void test_spec_example(void **state)
{
	(void)state;
	expect_compile("insert into conn(clientid) values(${clientid})", '?',
	               "insert into conn(clientid) values(?)", 1, SV_CLIENTID);
	expect_compile("insert into conn(clientid) values(${clientid})", '$',
	               "insert into conn(clientid) values($1)", 1, SV_CLIENTID);
	expect_compile("delete from mqtt_acked where clientid = ${clientid} and topic = ${topic}", '?',
	               "delete from mqtt_acked where clientid = ? and topic = ?", 2, SV_CLIENTID,
	               SV_TOPIC);
}

static void test_two_variables_in_order(void **state)
{
	(void)state;
	expect_compile("insert into t(a,b) values(${username}, ${peerhost})", '?',
	               "insert into t(a,b) values(?, ?)", 2, SV_USERNAME, SV_PEERHOST);
	expect_compile("insert into t(a,b) values(${username}, ${peerhost})", '$',
	               "insert into t(a,b) values($1, $2)", 2, SV_USERNAME, SV_PEERHOST);
	/* reversed: the order of appearance decides */
	expect_compile("insert into t(b,a) values(${peerhost}, ${username})", '$',
	               "insert into t(b,a) values($1, $2)", 2, SV_PEERHOST, SV_USERNAME);
	/* adjacent, no separator */
	expect_compile("${qos}${retain}", '?', "??", 2, SV_QOS, SV_RETAIN);
	expect_compile("${qos}${retain}", '$', "$1$2", 2, SV_QOS, SV_RETAIN);
}

static void test_variable_twice(void **state)
{
	(void)state;
	expect_compile("update c set a = ${clientid} where b = ${clientid}", '?',
	               "update c set a = ? where b = ?", 2, SV_CLIENTID, SV_CLIENTID);
	expect_compile("update c set a = ${clientid} where b = ${clientid}", '$',
	               "update c set a = $1 where b = $2", 2, SV_CLIENTID, SV_CLIENTID);
}

static void test_all_ten_names(void **state)
{
	(void)state;
	const char *src = "insert into x values(${clientid}, ${username}, ${peerhost}, ${node}, "
	                  "${topic}, ${qos}, ${msgid}, ${payload}, ${retain}, ${timestamp})";
	expect_compile(src, '?', "insert into x values(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", 10, SV_CLIENTID,
	               SV_USERNAME, SV_PEERHOST, SV_NODE, SV_TOPIC, SV_QOS, SV_MSGID, SV_PAYLOAD,
	               SV_RETAIN, SV_TIMESTAMP);
	expect_compile(src, '$', "insert into x values($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", 10,
	               SV_CLIENTID, SV_USERNAME, SV_PEERHOST, SV_NODE, SV_TOPIC, SV_QOS, SV_MSGID,
	               SV_PAYLOAD, SV_RETAIN, SV_TIMESTAMP);
	/* sql_var_name is the inverse */
	static const char *const names[SV__COUNT] = {"clientid", "username", "peerhost", "node",
	                                             "topic",    "qos",      "msgid",    "payload",
	                                             "retain",   "timestamp"};
	for (int i = 0; i < SV__COUNT; i++) {
		assert_string_equal(sql_var_name(i), names[i]);
		char src1[64], want[64];
		snprintf(src1, sizeof(src1), "select ${%s}", names[i]);
		snprintf(want, sizeof(want), "select ?");
		expect_compile(src1, '?', want, 1, i);
	}
	assert_string_equal(sql_var_name(-1), "?");
	assert_string_equal(sql_var_name(SV__COUNT), "?");
}

static void test_no_variables(void **state)
{
	(void)state;
	expect_compile("delete from t", '?', "delete from t", 0);
	/* a lone '$' or "$x" that is not "${" is text */
	expect_compile("select 5$ from t", '?', "select 5$ from t", 0);
	expect_compile("select $", '?', "select $", 0);
	/* "$x" is text to PostgreSQL (its only parameters are $N), but a named
	 * parameter to SQLite: see test_sqlite_parameters */
	expect_compile("a $x {y}", '$', "a $x {y}", 0);
	expect_refused("a $x {y}", '?', "SQL's own parameter \"$x\"", (const char *)NULL);
	/* in '$' style a '?' is plain text (PostgreSQL's jsonb operator) */
	expect_compile("select j ? 'k' from t where c = ${clientid}", '$',
	               "select j ? 'k' from t where c = $1", 1, SV_CLIENTID);
}

/* A statement without any SQL in it is refused (SQLite would prepare it to
 * no statement at all, and every job of the rule would fail). */
static void test_empty_statement(void **state)
{
	(void)state;
	expect_refused("", '?', "empty", (const char *)NULL);
	expect_refused("", '$', "empty", (const char *)NULL);
	expect_refused(" \t\r\n ", '?', "empty", (const char *)NULL);
	expect_compile(" x ", '?', " x ", 0);
}

static void test_quotes_kept(void **state)
{
	(void)state;
	/* doubled quotes inside literals stay as they are, and do not end them */
	expect_compile("insert into t values('it''s', ${clientid})", '?',
	               "insert into t values('it''s', ?)", 1, SV_CLIENTID);
	expect_compile("insert into t values('''', ${clientid}, '')", '?',
	               "insert into t values('''', ?, '')", 1, SV_CLIENTID);
	expect_compile("insert into \"my \"\"t\"\"\"(a) values(${qos})", '$',
	               "insert into \"my \"\"t\"\"\"(a) values($1)", 1, SV_QOS);
	expect_compile("insert into `t`(a) values(${qos})", '?', "insert into `t`(a) values(?)", 1,
	               SV_QOS);
	/* a '?' or "${" lookalike inside quotes is text */
	expect_compile("select '?', \"?\", ${topic}", '?', "select '?', \"?\", ?", 1, SV_TOPIC);
	expect_compile("select '$', '{', '}' , ${topic}", '?', "select '$', '{', '}' , ?", 1,
	               SV_TOPIC);
	/* the other kind of quote inside a literal is text */
	expect_compile("select 'a\"b', \"c'd\", ${msgid}", '?', "select 'a\"b', \"c'd\", ?", 1,
	               SV_MSGID);
}

static void test_variable_inside_quotes(void **state)
{
	(void)state;
	expect_refused("insert into t values('${clientid}')", '?', "inside a quoted string",
	               "remove the quotes", (const char *)NULL);
	expect_refused("insert into t values('x ${clientid} y')", '$', "inside a quoted string",
	               (const char *)NULL);
	expect_refused("insert into t(\"${clientid}\") values(1)", '?', "inside a quoted name",
	               (const char *)NULL);
	expect_refused("insert into `${topic}` values(1)", '?', "inside a quoted", (const char *)NULL);
	/* after a doubled quote we are still inside */
	expect_refused("select 'it''s ${clientid}'", '?', "inside a quoted string", (const char *)NULL);
	/* the offset is reported */
	expect_refused("'${qos}'", '?', "offset 1", (const char *)NULL);
}

static void test_unknown_variable(void **state)
{
	(void)state;
	expect_refused("insert into t values(${clientId})", '?', "unknown variable ${clientId}",
	               "clientid, username, peerhost, node, topic, qos, msgid, payload, retain, "
	               "timestamp",
	               (const char *)NULL);
	expect_refused("insert into t values(${})", '?', "unknown variable ${}", (const char *)NULL);
	expect_refused("insert into t values(${ clientid })", '$', "unknown variable ${ clientid }",
	               (const char *)NULL);
	expect_refused("insert into t values(${client_id})", '?', "${client_id}", (const char *)NULL);
	/* a prefix or an extension of a name is not the name */
	expect_refused("select ${client}", '?', "${client}", (const char *)NULL);
	expect_refused("select ${clientidx}", '?', "${clientidx}", (const char *)NULL);
	/* a long name is cut in the message, which stays bounded */
	char src[400];
	memset(src, 0, sizeof(src));
	strcpy(src, "select ${");
	memset(src + 9, 'z', 300);
	strcat(src, "}");
	expect_refused(src, '?', "unknown variable ${zzzz", (const char *)NULL);
	assert_true(strlen(err) < 300);
}

static void test_unterminated(void **state)
{
	(void)state;
	expect_refused("insert into t values(${clientid)", '?', "\"${\" without \"}\"",
	               (const char *)NULL);
	expect_refused("select ${", '?', "\"${\" without \"}\"", (const char *)NULL);
	expect_refused("select ${", '$', "\"${\" without \"}\"", (const char *)NULL);
	expect_refused("select 'abc", '?', "unterminated quote '", (const char *)NULL);
	expect_refused("select \"abc", '?', "unterminated quote \"", (const char *)NULL);
	expect_refused("select 'it''", '?', "unterminated quote", (const char *)NULL);
	expect_refused("select `x", '$', "unterminated quote `", (const char *)NULL);
}

static void test_bare_question_mark(void **state)
{
	(void)state;
	expect_refused("insert into t values(?)", '?', "a bare '?' at offset 21", "${name}",
	               (const char *)NULL);
	expect_refused("insert into t values(${clientid}, ?)", '?', "a bare '?'", (const char *)NULL);
}

/*
 * SQL's own parameters would take values meant for the ${name}s: bound in
 * order, one "?1" or ":name" among them shifts every later value into the
 * wrong column, silently. SQLite's forms are ?, ?NNN, :name, @name, #name
 * and $name; all are refused in code, with the offset and the reason.
 */
static void test_sqlite_parameters(void **state)
{
	(void)state;
	expect_refused("insert into t values(?1, ${clientid})", '?', "SQL's own parameter \"?1\"",
	               "offset 21", "${name}", "shift", (const char *)NULL);
	expect_refused("insert into t values(${clientid}, ?12)", '?', "\"?12\" at offset 34",
	               (const char *)NULL);
	expect_refused("insert into t values(:name, ${clientid})", '?', "\":name\" at offset 21",
	               (const char *)NULL);
	expect_refused("insert into t values(@name, ${clientid})", '?', "\"@name\"",
	               (const char *)NULL);
	expect_refused("insert into t values($name, ${clientid})", '?', "\"$name\"",
	               (const char *)NULL);
	expect_refused("insert into t values(#name, ${clientid})", '?', "\"#name\"",
	               (const char *)NULL);
	expect_refused("insert into t values($1, ${clientid})", '?', "\"$1\"", (const char *)NULL);
	expect_refused("insert into t values(:1)", '?', "\":1\"", (const char *)NULL);
	/* after a word or a literal, still a parameter (':' and '@' end a word) */
	expect_refused("select a:b from t", '?', "\":b\"", (const char *)NULL);
	expect_refused("select 'x'$y from t", '?', "\"$y\"", (const char *)NULL);
	expect_refused("select ${qos}$y", '?', "\"$y\"", (const char *)NULL);
	expect_refused("select ${qos}?", '?', "a bare '?' at offset 13", (const char *)NULL);
	expect_refused("select ?", '?', "a bare '?'", (const char *)NULL);
	/* a name up to 40 bytes in the message */
	char src[200];
	snprintf(src, sizeof(src), "select :%0100d", 0);
	expect_refused(src, '?', "SQL's own parameter \":000", (const char *)NULL);
	assert_true(strlen(err) < 250);

	/* data, not parameters: inside quotes and comments, or inside a word */
	expect_compile("insert into t values(':x @y $z #w ?1 ?', ${clientid})", '?',
	               "insert into t values(':x @y $z #w ?1 ?', ?)", 1, SV_CLIENTID);
	expect_compile("insert into \"a?b\"(`c:d`, [e@f]) values(${qos})", '?',
	               "insert into \"a?b\"(`c:d`, [e@f]) values(?)", 1, SV_QOS);
	expect_compile("insert into t values(${qos}) -- why? :x @y $z", '?',
	               "insert into t values(?) -- why? :x @y $z", 1, SV_QOS);
	expect_compile("insert /* ?1 :x */ into t values(${qos})", '?',
	               "insert /* ?1 :x */ into t values(?)", 1, SV_QOS);
	expect_compile("select a$b, c$, 5$ from t$1 where x = ${qos}", '?',
	               "select a$b, c$, 5$ from t$1 where x = ?", 1, SV_QOS);
	/* a lone ':', '@', '#' or '$' is no parameter (SQLite: a syntax error) */
	expect_compile("select a : b @ c # d $", '?', "select a : b @ c # d $", 0);
}

/* SQLite's [bracketed] identifiers are quotes (ended by the first ']');
 * PostgreSQL's brackets are array subscripts. */
static void test_sqlite_brackets(void **state)
{
	(void)state;
	expect_compile("select [a?b;c], ${topic}", '?', "select [a?b;c], ?", 1, SV_TOPIC);
	expect_refused("insert into [${topic}] values(1)", '?', "inside a quoted name",
	               (const char *)NULL);
	expect_refused("select [abc", '?', "unterminated quote [", (const char *)NULL);
	expect_compile("select a[1], ${qos}", '$', "select a[1], $1", 1, SV_QOS);
	expect_compile("select a[${qos}]", '$', "select a[$1]", 1, SV_QOS);
}

/*
 * PostgreSQL: $N is its parameter and is refused; '?' (jsonb operators),
 * "::" casts, '@' operators and ":name" (psql's, never sent) are kept.
 * Dollar-quoted strings and E'' strings with backslash escapes are quotes.
 */
static void test_postgresql_parameters(void **state)
{
	(void)state;
	expect_refused("insert into t values($1, ${clientid})", '$', "SQL's own parameter \"$1\"",
	               "offset 21", "${name}", (const char *)NULL);
	expect_refused("insert into t values(${clientid}, $12)", '$', "\"$12\"", (const char *)NULL);
	expect_compile("select j ?| array['a'], j ?& array['b'], x::int, a @> b, :name, ${qos}", '$',
	               "select j ?| array['a'], j ?& array['b'], x::int, a @> b, :name, $1", 1,
	               SV_QOS);
	/* a word with '$' in it */
	expect_compile("select a$1, ${qos}", '$', "select a$1, $1", 1, SV_QOS);
	/* dollar-quoted strings */
	expect_compile("select $$it's ? $1 ; -- $$, ${qos}", '$', "select $$it's ? $1 ; -- $$, $1", 1,
	               SV_QOS);
	expect_compile("select $f$ $$ $f$, $_x1$a$_x1$, ${qos}", '$',
	               "select $f$ $$ $f$, $_x1$a$_x1$, $1", 1, SV_QOS);
	expect_refused("select $t$ ${qos} $t$", '$', "inside a quoted string", "offset 11",
	               (const char *)NULL);
	expect_refused("select $t$ abc $u$", '$', "unterminated dollar-quoted string $t$",
	               (const char *)NULL);
	expect_refused("select $$", '$', "unterminated dollar-quoted string $$", (const char *)NULL);
	/* a '$' of a dollar quote next to a ${name} is ambiguous */
	expect_refused("select $$a$${qos}", '$', "ambiguous \"$${\" at offset 10", (const char *)NULL);
	expect_refused("select $${qos}$$", '$', "ambiguous \"$${\" at offset 7", (const char *)NULL);
	expect_refused("select $t${qos}$t$", '$', "ambiguous \"$t${\"", (const char *)NULL);
	/* "x$1" is one name to PostgreSQL: a ${name} right after a word is
	 * refused there (SQLite reads "x?" as x and ?) */
	expect_refused("select x${qos}", '$', "right after a name", "offset 8", (const char *)NULL);
	expect_refused("select a$${qos}", '$', "right after a name", (const char *)NULL);
	expect_compile("select x${qos}", '?', "select x?", 1, SV_QOS);
	expect_compile("select x ${qos}${retain}", '$', "select x $1$2", 2, SV_QOS, SV_RETAIN);
	/* nor may a letter follow it ("$1x"), or a digit in either dialect:
	 * "${qos}1" would become SQLite's ?1 or PostgreSQL's $11 */
	expect_refused("select ${qos}x", '$', "offset 7 is followed by a letter", (const char *)NULL);
	expect_compile("select ${qos}x", '?', "select ?x", 1, SV_QOS);
	expect_refused("select ${clientid}, ${qos}1", '$', "offset 20 is followed by a digit",
	               (const char *)NULL);
	expect_refused("select ${clientid}, ${qos}1", '?', "offset 20 is followed by a digit",
	               (const char *)NULL);
	expect_compile("select ${qos}$$a$$", '$', "select $1$$a$$", 1, SV_QOS);
	/* E'' strings: a backslash escapes the quote */
	expect_compile("select E'it\\'s', e'\\\\', ${qos}", '$', "select E'it\\'s', e'\\\\', $1", 1,
	               SV_QOS);
	expect_refused("select E'\\' ${qos}'", '$', "inside a quoted string", (const char *)NULL);
	expect_refused("select E'\\${qos}'", '$', "inside a quoted string at offset 10",
	               (const char *)NULL);
	/* ...but not in plain strings, nor after a word ending in E */
	expect_compile("select '\\', ${qos}", '$', "select '\\', $1", 1, SV_QOS);
	expect_compile("select x from tablE'\\', ${qos}", '$', "select x from tablE'\\', $1", 1,
	               SV_QOS);
}

/*
 * Comments: `-- ...` to the end of the line, and block comments. What is in
 * them is neither code nor quotes; a ${name} in one is refused (it would
 * never be bound, though it reads as if it were used).
 */
static void test_comments(void **state)
{
	(void)state;
	for (int style = 0; style < 2; style++) {
		char ph = style ? '$' : '?';
		const char *want1 = style ? "select 1 -- it's\n, $1" : "select 1 -- it's\n, ?";
		expect_compile("select 1 -- it's\n, ${qos}", ph, want1, 1, SV_QOS);
		const char *want2 = style ? "/* it's; \"x */ insert into t values($1)"
		                          : "/* it's; \"x */ insert into t values(?)";
		expect_compile("/* it's; \"x */ insert into t values(${clientid})", ph, want2, 1,
		               SV_CLIENTID);
		expect_compile("select 1 --", ph, "select 1 --", 0);
		expect_compile("select 1 - 2 / 3", ph, "select 1 - 2 / 3", 0);
		expect_refused("insert into t values(${qos}) -- was ${clientid}", ph,
		               "${...} inside a comment at offset 36", "never be bound",
		               (const char *)NULL);
		expect_refused("insert /* ${topic} */ into t values(1)", ph, "inside a comment",
		               (const char *)NULL);
		expect_refused("insert /* ${topic into t values(1) */", ph, "inside a comment",
		               (const char *)NULL);
		expect_refused("insert into t values(1) /* open", ph, "\"/*\" without \"*/\" at offset 24",
		               (const char *)NULL);
		expect_refused("select 1 /*/", ph, "\"/*\" without \"*/\"", (const char *)NULL);
		/* quotes hide comment markers */
		const char *want3 = style ? "select '--', '/*', $1" : "select '--', '/*', ?";
		expect_compile("select '--', '/*', ${qos}", ph, want3, 1, SV_QOS);
	}
	/* PostgreSQL's block comments nest; SQLite's end at the first close */
	expect_refused("/* a /* b */ ${qos} */ select 1", '$', "inside a comment", (const char *)NULL);
	expect_compile("/* a /* b */ select ${qos}", '?', "/* a /* b */ select ?", 1, SV_QOS);
	expect_refused("/* a /* b */ select ${qos}", '$', "\"/*\" without \"*/\"", (const char *)NULL);
}

/*
 * One statement per string: SQLite prepares the first statement of a text
 * and would silently ignore the rest. A ';' ends the statement; after it
 * only spaces, comments and more ';' may follow.
 */
static void test_one_statement(void **state)
{
	(void)state;
	for (int style = 0; style < 2; style++) {
		char ph = style ? '$' : '?';
		expect_refused("insert into a values(${clientid}); delete from b", ph,
		               "a second statement at offset 35", "';' at offset 33", "only the first",
		               (const char *)NULL);
		expect_refused("insert into a values(1);delete from b", ph, "second statement",
		               (const char *)NULL);
		expect_refused("insert into a values(1); -- c\n/* d */ select ${qos}", ph,
		               "second statement", (const char *)NULL);
		expect_refused("insert into a values(1); ${qos}", ph, "second statement",
		               (const char *)NULL);
		expect_refused("select 1; 'x'", ph, "second statement", (const char *)NULL);
		/* a trailing ';', spaces and comments are fine, and kept */
		expect_compile("delete from a where c = ${clientid};", ph,
		               style ? "delete from a where c = $1;" : "delete from a where c = ?;", 1,
		               SV_CLIENTID);
		expect_compile("delete from a ; ;\n -- done\n /* really */ ;\t", ph,
		               "delete from a ; ;\n -- done\n /* really */ ;\t", 0);
		/* ';' as data */
		expect_compile("insert into a values(';', \";\") -- ; x\n/* ; y */", ph,
		               "insert into a values(';', \";\") -- ; x\n/* ; y */", 0);
		/* nothing but comments and ';' is an empty statement */
		expect_refused("-- nothing", ph, "empty", (const char *)NULL);
		expect_refused("/* nothing */ ;", ph, "empty", (const char *)NULL);
		expect_refused(";", ph, "empty", (const char *)NULL);
	}
	expect_compile("select [;]", '?', "select [;]", 0);
	expect_compile("select $$;$$", '$', "select $$;$$", 0);
	/* in a raw action, the message names the statement */
	const char *texts[] = {"insert into a values(${clientid})", "insert into b values(1); x"};
	void *out = NULL;
	assert_int_equal(sql_raw_compile(texts, 2, '?', &out, err, sizeof(err)), -1);
	assert_null(out);
	assert_non_null(strstr(err, "statement 2: a second statement"));
}

/* Big inputs: buffers are sized for the worst case. */
static void test_huge_inputs(void **state)
{
	(void)state;
	/* 64 KiB of ${clientid} */
	const char *v = "${clientid}";
	size_t vl = strlen(v), n = 65536 / vl;
	char *src = malloc(n * vl + 1);
	assert_non_null(src);
	for (size_t i = 0; i < n; i++)
		memcpy(src + i * vl, v, vl);
	src[n * vl] = 0;
	for (int style = 0; style < 2; style++) {
		char ph = style ? '$' : '?';
		sql_tmpl t;
		assert_int_equal(sql_tmpl_compile(src, ph, &t, err, sizeof(err)), 0);
		assert_int_equal(t.nvars, n);
		for (size_t i = 0; i < n; i++)
			assert_int_equal(t.vars[i], SV_CLIENTID);
		if (ph == '?') {
			assert_int_equal(strlen(t.text), n);
			assert_int_equal(strspn(t.text, "?"), n);
		} else {
			/* "$1$2...$n" */
			char last[16];
			snprintf(last, sizeof(last), "$%zu", n);
			size_t tl = strlen(t.text);
			assert_true(tl > strlen(last));
			assert_string_equal(t.text + tl - strlen(last), last);
			assert_int_equal(strncmp(t.text, "$1$2$3", 6), 0);
		}
		sql_tmpl_free(&t);
	}
	free(src);

	/* the shortest variable, ${qos}, many times: '$' placeholders grow to
	 * five digits and are as long as the variable (tests the text buffer) */
	const char *q = "${qos}";
	size_t ql = strlen(q), m = 60000;
	src = malloc(m * ql + 1);
	assert_non_null(src);
	for (size_t i = 0; i < m; i++)
		memcpy(src + i * ql, q, ql);
	src[m * ql] = 0;
	sql_tmpl t;
	assert_int_equal(sql_tmpl_compile(src, '$', &t, err, sizeof(err)), 0);
	assert_int_equal(t.nvars, m);
	assert_non_null(strstr(t.text, "$59999$60000"));
	sql_tmpl_free(&t);
	free(src);

	/* more than 65535 variables are refused */
	m = 70000;
	src = malloc(m * ql + 1);
	assert_non_null(src);
	for (size_t i = 0; i < m; i++)
		memcpy(src + i * ql, q, ql);
	src[m * ql] = 0;
	expect_refused(src, '$', "too many variables", (const char *)NULL);
	expect_refused(src, '?', "too many variables", (const char *)NULL);
	free(src);

	/* a long literal with doubled quotes */
	size_t L = 1 << 20;
	src = malloc(L + 64);
	assert_non_null(src);
	size_t o = 0;
	src[o++] = '\''; /* opens */
	while (o < L + 1)
		src[o++] = '\''; /* L / 2 doubled quotes */
	src[o++] = '\''; /* closes */
	strcpy(src + o, " ${topic}");
	assert_int_equal(sql_tmpl_compile(src, '?', &t, err, sizeof(err)), 0);
	assert_int_equal(t.nvars, 1);
	assert_int_equal(strlen(t.text), o + 2);
	sql_tmpl_free(&t);
	free(src);
}

/* sql_raw_compile: several statements; an error names the statement. */
static void test_raw_compile(void **state)
{
	(void)state;
	const char *texts[] = {"insert into a values(${clientid})", "insert into b values(${topic}, ${qos})"};
	void *out = NULL;
	assert_int_equal(sql_raw_compile(texts, 2, '?', &out, err, sizeof(err)), 0);
	sql_raw *r = out;
	assert_int_equal(r->n, 2);
	assert_string_equal(r->t[0].text, "insert into a values(?)");
	assert_string_equal(r->t[1].text, "insert into b values(?, ?)");
	assert_int_equal(r->t[1].vars[0], SV_TOPIC);
	assert_int_equal(r->t[1].vars[1], SV_QOS);
	sql_raw_free(out);
	sql_raw_free(NULL);

	const char *bad[] = {"insert into a values(${clientid})", "insert into b values(${x})",
	                     "insert into c values(1)"};
	out = NULL;
	assert_int_equal(sql_raw_compile(bad, 3, '?', &out, err, sizeof(err)), -1);
	assert_null(out);
	assert_non_null(strstr(err, "statement 2: unknown variable ${x}"));
	assert_int_equal(sql_raw_compile(bad + 1, 1, '?', &out, err, sizeof(err)), -1);
	assert_null(strstr(err, "statement"));
	assert_non_null(strstr(err, "unknown variable ${x}"));
}

/* ------------------------------------------------------------------------ */
/* sql_prefix_range                                                         */
/* ------------------------------------------------------------------------ */

static bool range_of(const char *filter, size_t flen, char *lo_out, char *hi_out)
{
	char buf[2 * 256 + 2];
	mqtt_str lo = {0}, hi = {0};
	assert_true(flen <= 256);
	bool ok = sql_prefix_range((mqtt_str){(const uint8_t *)filter, (uint32_t)flen}, buf, &lo, &hi);
	if (ok) {
		assert_true(lo.len <= flen && hi.len <= flen);
		memcpy(lo_out, lo.p, lo.len);
		lo_out[lo.len] = 0;
		memcpy(hi_out, hi.p, hi.len);
		hi_out[hi.len] = 0;
		/* lo < hi, byte-wise */
		size_t k = lo.len < hi.len ? lo.len : hi.len;
		int c = memcmp(lo.p, hi.p, k);
		assert_true(c < 0 || (c == 0 && lo.len < hi.len));
	}
	return ok;
}

static void test_prefix_range(void **state)
{
	(void)state;
	char lo[300], hi[300];
	assert_true(range_of("a/b/+", 5, lo, hi));
	assert_string_equal(lo, "a/b/");
	assert_string_equal(hi, "a/b0");
	/* "a/b/#" matches "a/b" too: the range starts at the parent level */
	assert_true(range_of("a/b/#", 5, lo, hi));
	assert_string_equal(lo, "a/b");
	assert_string_equal(hi, "a/b0");
	assert_true(strcmp("a/b", lo) >= 0 && strcmp("a/b", hi) < 0);
	/* only a trailing "/#" does that */
	assert_true(range_of("a/b#", 4, lo, hi));
	assert_string_equal(lo, "a/b");
	assert_string_equal(hi, "a/c");
	assert_true(range_of("sensors/+/temp", 14, lo, hi));
	assert_string_equal(lo, "sensors/");
	assert_string_equal(hi, "sensors0");
	assert_true(range_of("a/b", 3, lo, hi)); /* no wildcard: the filter itself */
	assert_string_equal(lo, "a/b");
	assert_string_equal(hi, "a/c");
	assert_true(range_of("$SYS/#", 6, lo, hi));
	assert_string_equal(lo, "$SYS");
	assert_string_equal(hi, "$SYS0");
	/* an empty prefix: every topic */
	assert_false(range_of("#", 1, lo, hi));
	assert_false(range_of("+/x", 3, lo, hi));
	assert_false(range_of("+", 1, lo, hi));
	assert_false(range_of("", 0, lo, hi));
	/* trailing bytes >= 0x7F are cut and the ASCII byte before them
	 * incremented, so hi stays valid UTF-8 (PostgreSQL and MySQL refuse
	 * bounds that are not) */
	assert_true(range_of("ab\xff\xff/#", 6, lo, hi));
	assert_string_equal(lo, "ab\xff\xff");
	assert_string_equal(hi, "ab\xff\xff" "0");
	assert_true(range_of("ab\xff\xff+", 5, lo, hi));
	assert_int_equal(strlen(lo), 4);
	assert_memory_equal(lo, "ab\xff\xff", 4);
	assert_string_equal(hi, "ac");
	assert_true(range_of("a\xfe\xff#", 4, lo, hi));
	assert_memory_equal(lo, "a\xfe\xff", 3);
	assert_string_equal(hi, "b");
	/* UTF-8: "a/\u00e9+" is bounded by "a0", "a/\u00e9/#" by "a/\u00e90" */
	assert_true(range_of("a/\xc3\xa9+", 5, lo, hi));
	assert_string_equal(lo, "a/\xc3\xa9");
	assert_string_equal(hi, "a0");
	assert_true(range_of("a/\xc3\xa9/#", 6, lo, hi));
	assert_string_equal(hi, "a/\xc3\xa9" "0");
	assert_true(range_of("a\x7f+", 3, lo, hi));
	assert_string_equal(hi, "b");
	/* no ASCII byte: no upper bound is made, treated as every topic */
	assert_false(range_of("\xff\xff+", 3, lo, hi));
	assert_false(range_of("\xff#", 2, lo, hi));
	assert_true(range_of("\xff\xff/+", 4, lo, hi));
	assert_string_equal(lo, "\xff\xff/");
	assert_string_equal(hi, "\xff\xff" "0");
	/* every topic under the prefix falls in [lo, hi); others do not */
	static const char *const in[] = {"a/b/", "a/b/c", "a/b/\xff\xff", "a/b/c/d/e"};
	static const char *const out[] = {"a/b", "a/a/z", "a/b0", "a/c", "b", "a/b\xff"};
	assert_true(range_of("a/b/+", 5, lo, hi));
	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		assert_true(strcmp(in[i], lo) >= 0);
		assert_true(strcmp(in[i], hi) < 0);
	}
	for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++)
		assert_true(strcmp(out[i], lo) < 0 || strcmp(out[i], hi) >= 0);
}

/* MySQL's rules ('m'): '?' placeholders; backslash escapes in '...' and
 * "..." but not in `...`; "#" and "-- " comments, "--" without a space is
 * arithmetic; @var is a variable, :name and $name ordinary text; [ is no
 * quote. */
static void test_mysql_rules(void **state)
{
	(void)state;
	const char m = SQL_LEX_MYSQL;
	expect_compile("insert into conn(clientid) values(${clientid})", m,
	               "insert into conn(clientid) values(?)", 1, SV_CLIENTID);
	/* a backslash-escaped quote does not end the string: the ${} after it
	 * is outside */
	expect_compile("insert into t(a, b) values('it\\'s', ${topic})", m,
	               "insert into t(a, b) values('it\\'s', ?)", 1, SV_TOPIC);
	expect_compile("insert into t(a, b) values(\"x\\\"y\", ${qos})", m,
	               "insert into t(a, b) values(\"x\\\"y\", ?)", 1, SV_QOS);
	/* ...so a ${} that SQLite would see outside is inside for MySQL */
	expect_refused("insert into t values('a\\', ${topic})", m, "inside a quoted string", NULL);
	expect_compile("insert into t values('a\\', ${topic})", '?', "insert into t values('a\\', ?)",
	               1, SV_TOPIC);
	/* backticks: no backslash escape, doubled backtick */
	expect_compile("insert into `my\\` (`a``b`) values(${msgid})", m,
	               "insert into `my\\` (`a``b`) values(?)", 1, SV_MSGID);
	/* comments */
	expect_refused("insert into t values(1) # ${topic}", m, "inside a comment", NULL);
	expect_refused("insert into t values(1) -- ${topic}", m, "inside a comment", NULL);
	expect_compile("select 1--${qos}", m, "select 1--?", 1, SV_QOS);
	expect_compile("insert into t values(${qos}) # done", m, "insert into t values(?) # done", 1,
	               SV_QOS);
	/* '?' is MySQL's parameter; @var, :name, $name and [ are not */
	expect_refused("insert into t values(?, ${qos})", m, "bare '?'", NULL);
	expect_compile("set @a = ${qos}", m, "set @a = ?", 1, SV_QOS);
	expect_compile("select :x, $y, [z] from t where a = ${topic}", m,
	               "select :x, $y, [z] from t where a = ?", 1, SV_TOPIC);
	expect_refused("insert into t values(1); insert into t values(${qos})", m, "second statement",
	               NULL);
	/* the server runs an executable comment's contents */
	expect_refused("insert into t values(${qos} /*! , ? */)", m, "executable comment", NULL);
	expect_refused("insert into t values(${qos}) /*M!100000 ? */", m, "executable comment", NULL);
	expect_compile("insert into t values(${qos}) /* ! ? */", m,
	               "insert into t values(?) /* ! ? */", 1, SV_QOS);
}

/* payload_encoding = base64: bound as base64 text, read back as the bytes,
 * for every length modulo 3 (padding); binary mode and columns that are not
 * base64 pass through as they are. */
static void test_payload_base64(void **state)
{
	(void)state;
	sql_conn b64 = {.payload_base64 = true}, bin = {.payload_base64 = false};
	const uint8_t raw[] = {0x00, 0xff, 'a', '\'', 0x80, '\\', 0x00};
	for (uint32_t n = 0; n <= sizeof(raw); n++) {
		msg_init mi = {.topic = {(const uint8_t *)"t", 1}, .payload = {raw, n}, .qos = 1};
		kmq_msg *m = msg_new(&mi);
		assert_non_null(m);
		sql_val v;
		char *tmp = NULL;
		assert_int_equal(sql_payload_in(&b64, m, &v, &tmp), 0);
		assert_int_equal(v.type, SQLV_TEXT);
		assert_int_equal(v.len, (n + 2) / 3 * 4);
		char *back_tmp = NULL;
		sql_val back = sql_payload_out(&b64, v, &back_tmp);
		assert_int_equal(back.type, SQLV_BLOB);
		assert_int_equal(back.len, n);
		if (n)
			assert_memory_equal(back.p, raw, n);
		free(back_tmp);
		free(tmp);
		tmp = NULL;
		assert_int_equal(sql_payload_in(&bin, m, &v, &tmp), 0);
		assert_null(tmp);
		assert_int_equal(v.type, SQLV_BLOB);
		assert_ptr_equal(v.p, m->payload.p);
		msg_unref(&m);
	}
	/* "aGk=" is "hi"; a column that is not base64 (length, alphabet) stays */
	char *tmp = NULL;
	sql_val out = sql_payload_out(&b64, SQLV_T("aGk=", 4), &tmp);
	assert_int_equal(out.len, 2);
	assert_memory_equal(out.p, "hi", 2);
	free(tmp);
	out = sql_payload_out(&b64, SQLV_T("hi!", 3), &tmp);
	assert_null(tmp);
	assert_int_equal(out.len, 3);
	out = sql_payload_out(&b64, SQLV_T("h*!?", 4), &tmp);
	assert_null(tmp);
	assert_memory_equal(out.p, "h*!?", 4);
	out = sql_payload_out(&b64, SQLV_NUL, &tmp);
	assert_int_equal(out.type, SQLV_NULL);
}

/* A maximal filter: the buffer is 2 * len + 2 bytes, as the contract says. */
static void test_prefix_range_long(void **state)
{
	(void)state;
	size_t len = 65535;
	char *f = malloc(len);
	char *buf = malloc(2 * len + 2);
	assert_non_null(f);
	assert_non_null(buf);
	memset(f, 'x', len - 1);
	f[len - 1] = '#';
	mqtt_str lo, hi;
	assert_true(sql_prefix_range((mqtt_str){(const uint8_t *)f, (uint32_t)len}, buf, &lo, &hi));
	assert_int_equal(lo.len, len - 1);
	assert_int_equal(hi.len, len - 1);
	assert_int_equal(hi.p[len - 2], 'y');
	/* no wildcard at all, full length */
	memset(f, 'x', len);
	assert_true(sql_prefix_range((mqtt_str){(const uint8_t *)f, (uint32_t)len}, buf, &lo, &hi));
	assert_int_equal(lo.len, len);
	assert_int_equal(hi.len, len);
	free(f);
	free(buf);
}

/* ------------------------------------------------------------------------ */
/* Message ids and times                                                    */
/* ------------------------------------------------------------------------ */

static void test_msgid_parse_roundtrip(void **state)
{
	(void)state;
	msgid_gen g;
	msgid_gen_init(&g, 3);
	uint64_t now = 1700000000123ull;
	for (int i = 0; i < 1000; i++) {
		uint8_t id[16], back[16];
		char hex[33];
		msgid_next(&g, now + (uint64_t)(i / 10), id);
		msgid_to_hex(id, hex);
		assert_int_equal(strlen(hex), 32);
		assert_int_equal(sql_msgid_parse(hex, 32, back), 0);
		assert_memory_equal(id, back, 16);
	}
	/* every byte value */
	uint8_t id[16], back[16];
	char hex[33];
	for (int b = 0; b < 256; b += 16) {
		for (int i = 0; i < 16; i++)
			id[i] = (uint8_t)(b + i);
		msgid_to_hex(id, hex);
		assert_int_equal(sql_msgid_parse(hex, 32, back), 0);
		assert_memory_equal(id, back, 16);
	}
	/* upper case is read too */
	assert_int_equal(sql_msgid_parse("00112233445566778899AABBCCDDEEFF", 32, back), 0);
	static const uint8_t want[16] = {0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
	                                 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff};
	assert_memory_equal(back, want, 16);
	/* not ours */
	assert_int_equal(sql_msgid_parse("00112233445566778899aabbccddeef", 31, back), -1);
	assert_int_equal(sql_msgid_parse("00112233445566778899aabbccddeeff0", 33, back), -1);
	assert_int_equal(sql_msgid_parse("00112233445566778899aabbccddeefg", 32, back), -1);
	assert_int_equal(sql_msgid_parse("0011223344556677-899aabbccddeeff", 32, back), -1);
	assert_int_equal(sql_msgid_parse(" 0112233445566778899aabbccddeeff", 32, back), -1);
	assert_int_equal(sql_msgid_parse("", 0, back), -1);
	assert_int_equal(sql_msgid_parse("42", 2, back), -1);
}

static void test_msgid_floor(void **state)
{
	(void)state;
	char floor[33];
	uint64_t now = 1700000000000ull, range = 2 * 3600 * 1000ull;
	sql_msgid_floor(now, range, floor);
	assert_int_equal(strlen(floor), 32);
	uint8_t id[16];
	assert_int_equal(sql_msgid_parse(floor, 32, id), 0);
	/* the first 6 bytes are the time (ms), the rest zero */
	uint64_t ms = 0;
	for (int i = 0; i < 6; i++)
		ms = ms << 8 | id[i];
	assert_true(ms == now - range);
	for (int i = 6; i < 16; i++)
		assert_int_equal(id[i], 0);

	/* ids made at the floor's millisecond or later sort after it; earlier ones before */
	msgid_gen g;
	msgid_gen_init(&g, 1); /* worker 1: the id's last bytes are not all zero */
	uint8_t a[16], b[16];
	char ha[33], hb[33];
	msgid_next(&g, now - range - 1, a);
	msgid_next(&g, now - range, b);
	msgid_to_hex(a, ha);
	msgid_to_hex(b, hb);
	assert_true(strcmp(ha, floor) < 0);
	assert_true(strcmp(hb, floor) > 0);

	/* a range longer than the time since the epoch: the lowest id */
	sql_msgid_floor(now, now, floor);
	assert_string_equal(floor, "00000000000000000000000000000000");
	sql_msgid_floor(now, UINT64_MAX, floor);
	assert_string_equal(floor, "00000000000000000000000000000000");
	sql_msgid_floor(now, (uint64_t)INT64_MAX, floor);
	assert_string_equal(floor, "00000000000000000000000000000000");
	/* range 0: now */
	sql_msgid_floor(now, 0, floor);
	assert_int_equal(sql_msgid_parse(floor, 32, id), 0);
	ms = 0;
	for (int i = 0; i < 6; i++)
		ms = ms << 8 | id[i];
	assert_true(ms == now);
}

static void test_datetime(void **state)
{
	(void)state;
	char out[20];
	sql_datetime(0, out);
	assert_string_equal(out, "1970-01-01 00:00:00");
	sql_datetime(999, out);
	assert_string_equal(out, "1970-01-01 00:00:00");
	sql_datetime(1000, out);
	assert_string_equal(out, "1970-01-01 00:00:01");
	sql_datetime(1700000000123ull, out);
	assert_string_equal(out, "2023-11-14 22:13:20");
	sql_datetime(951782400000ull, out); /* a leap day */
	assert_string_equal(out, "2000-02-29 00:00:00");
	sql_datetime(4102444799000ull, out);
	assert_string_equal(out, "2099-12-31 23:59:59");
	assert_int_equal(strlen(out), 19);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_spec_example),
	    cmocka_unit_test(test_two_variables_in_order),
	    cmocka_unit_test(test_variable_twice),
	    cmocka_unit_test(test_all_ten_names),
	    cmocka_unit_test(test_no_variables),
	    cmocka_unit_test(test_empty_statement),
	    cmocka_unit_test(test_quotes_kept),
	    cmocka_unit_test(test_variable_inside_quotes),
	    cmocka_unit_test(test_unknown_variable),
	    cmocka_unit_test(test_unterminated),
	    cmocka_unit_test(test_bare_question_mark),
	    cmocka_unit_test(test_sqlite_parameters),
	    cmocka_unit_test(test_sqlite_brackets),
	    cmocka_unit_test(test_postgresql_parameters),
	    cmocka_unit_test(test_mysql_rules),
	    cmocka_unit_test(test_comments),
	    cmocka_unit_test(test_one_statement),
	    cmocka_unit_test(test_huge_inputs),
	    cmocka_unit_test(test_raw_compile),
	    cmocka_unit_test(test_payload_base64),
	    cmocka_unit_test(test_prefix_range),
	    cmocka_unit_test(test_prefix_range_long),
	    cmocka_unit_test(test_msgid_parse_roundtrip),
	    cmocka_unit_test(test_msgid_floor),
	    cmocka_unit_test(test_datetime),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
