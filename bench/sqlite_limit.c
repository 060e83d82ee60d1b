/*
 * sqlite_limit.c - keepmq-sqlite-limit: how fast SQLite itself inserts
 * QoS 1 messages into mqtt_msg on this machine, with nothing else running.
 *
 * Design
 * ------
 * This is the ceiling for the broker's persisted-publish path: the broker's
 * pool thread does this same work and more (queueing, message references,
 * acknowledgements), and shares the CPUs with the I/O workers and the load
 * generator. So the program reproduces exactly what the SQLite backend
 * (src/backends/sqlite/sqlite.c, src/backends/sql/msgs.c) does per row and
 * per transaction, and nothing else:
 *
 *  - the file is opened with SQLITE_OPEN_READWRITE | CREATE | NOMUTEX,
 *    busy timeout 5 s, extended result codes, then `PRAGMA journal_mode =
 *    WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = OFF;` and the
 *    schema keepmq creates (etc/sql/sqlite.sql, linked in from the same
 *    generated file the broker embeds: mqtt_msg with its three indexes);
 *  - the INSERT is the dialect's text, prepared once with
 *    SQLITE_PREPARE_PERSISTENT, as are BEGIN IMMEDIATE and COMMIT;
 *  - per row: a time-ordered 128-bit message id as 32 hex digits (the
 *    broker's msgid_next layout), topic bench/<i> and sender <prefix>-p<i>
 *    for i over --publishers (as keepmq-loadgen's fan-in publishers), in
 *    runs of --run consecutive rows per publisher (default 64, the load
 *    generator's window: a publisher's PUBLISHes reach the broker in
 *    bursts). The order matters: a transaction dirties one leaf page of the
 *    topic and the sender index per distinct publisher in it, so 100 rows
 *    strictly round robin over 10 publishers (--run 1) insert at about 60%
 *    of the rate of runs of 64 here. Node
 *    keepmq@127.0.0.1, qos 1, retain 0, the payload as a BLOB, the arrival
 *    time formatted as 'YYYY-MM-DD HH:MM:SS' (gmtime_r + strftime, like
 *    sql_datetime); values bound SQLITE_STATIC, then step, reset,
 *    clear_bindings;
 *  - --rows-per-txn N rows between BEGIN IMMEDIATE and COMMIT (the broker's
 *    batch_size is 100; 1 is what a pool without batching would do).
 *
 * It inserts for --duration seconds (or --rows rows) into a fresh file and
 * reports rows per second over the whole time, so the table grows as it does
 * during a broker run of the same length; WAL auto-checkpoints happen inside
 * the measured time, as they do in the broker. The database file is deleted
 * afterwards unless --keep is given.
 *
 * Output: `key value` lines, or one flat JSON object with --json (the same
 * convention as keepmq-loadgen, so bench/persist.sh parses both alike).
 */
#include <errno.h>
#include <getopt.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

extern const char sqlite_schema_sql[]; /* build/gen/sqlite_schema.c, from etc/sql/sqlite.sql */

/* The dialect's statement (src/backends/sqlite/dialect.c, SQL_MSG_INSERT). */
static const char insert_sql[] =
	"INSERT INTO mqtt_msg (msgid, topic, sender, node, qos, retain, payload, arrived) "
	"VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

static int fail(sqlite3 *db, const char *what)
{
	fprintf(stderr, "keepmq-sqlite-limit: %s: %s\n", what, db ? sqlite3_errmsg(db) : "?");
	return 1;
}

/* Time this thread spent runnable but waiting for a CPU (ns), from
 * /proc/thread-self/schedstat; 0 if unavailable. On a shared machine this
 * tells a slow run from a starved one. */
static uint64_t run_delay_ns(void)
{
	unsigned long long on_cpu = 0, delay = 0;
	FILE *f = fopen("/proc/thread-self/schedstat", "r");
	if (!f)
		return 0;
	if (fscanf(f, "%llu %llu", &on_cpu, &delay) != 2)
		delay = 0;
	fclose(f);
	return delay;
}

static double cpu_seconds(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
	       (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void usage(FILE *f)
{
	fputs("usage: keepmq-sqlite-limit [options]\n"
	      "  --db PATH            database file; must not exist (default: a new file in\n"
	      "                       $TMPDIR or /tmp, deleted at the end)\n"
	      "  --rows-per-txn N     rows per transaction (100)\n"
	      "  --duration S         seconds to insert (5)\n"
	      "  --rows N             stop after N rows instead (0: use --duration)\n"
	      "  --payload B          payload bytes (64)\n"
	      "  --publishers P       distinct topics/senders (10)\n"
	      "  --run N              consecutive rows of one publisher before the next (64)\n"
	      "  --synchronous normal|full   (normal, keepmq's default)\n"
	      "  --keep               do not delete the database file\n"
	      "  --json               one JSON object on stdout\n"
	      "  --count PATH         only print the number of rows in PATH's mqtt_msg\n"
	      "                       (read-only; what bench/persist.sh polls with)\n",
	      f);
}

/* --count: rows in mqtt_msg of an existing file, opened read-only (a live
 * broker may be writing it: WAL lets this reader run beside the writer). */
static int count_rows(const char *path)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK)
		return fail(db, path);
	sqlite3_busy_timeout(db, 5000);
	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM mqtt_msg", -1, &st, NULL) != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW)
		return fail(db, "SELECT count(*) FROM mqtt_msg");
	printf("%lld\n", (long long)sqlite3_column_int64(st, 0));
	sqlite3_finalize(st);
	sqlite3_close_v2(db);
	return 0;
}


int main(int argc, char **argv)
{
	const char *path = NULL;
	long per_txn = 100, payload = 64, publishers = 10, run = 64;
	double duration = 5;
	long long max_rows = 0;
	int json = 0, keep = 0, full = 0;
	enum { O_DB = 1, O_TXN, O_DUR, O_ROWS, O_PAY, O_PUBS, O_SYNC, O_RUN, O_KEEP, O_JSON, O_COUNT, O_HELP };
	static const struct option opts[] = {
		{"db", required_argument, NULL, O_DB},
		{"rows-per-txn", required_argument, NULL, O_TXN},
		{"duration", required_argument, NULL, O_DUR},
		{"rows", required_argument, NULL, O_ROWS},
		{"payload", required_argument, NULL, O_PAY},
		{"publishers", required_argument, NULL, O_PUBS},
		{"synchronous", required_argument, NULL, O_SYNC},
		{"run", required_argument, NULL, O_RUN},
		{"keep", no_argument, NULL, O_KEEP},
		{"json", no_argument, NULL, O_JSON},
		{"count", required_argument, NULL, O_COUNT},
		{"help", no_argument, NULL, O_HELP},
		{NULL, 0, NULL, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case O_DB: path = optarg; break;
		case O_TXN: per_txn = strtol(optarg, NULL, 10); break;
		case O_DUR: duration = strtod(optarg, NULL); break;
		case O_ROWS: max_rows = strtoll(optarg, NULL, 10); break;
		case O_PAY: payload = strtol(optarg, NULL, 10); break;
		case O_PUBS: publishers = strtol(optarg, NULL, 10); break;
		case O_SYNC:
			if (strcmp(optarg, "full") == 0)
				full = 1;
			else if (strcmp(optarg, "normal") != 0) {
				usage(stderr);
				return 2;
			}
			break;
		case O_RUN: run = strtol(optarg, NULL, 10); break;
		case O_KEEP: keep = 1; break;
		case O_JSON: json = 1; break;
		case O_COUNT: return count_rows(optarg);
		case O_HELP:
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (per_txn < 1 || payload < 0 || publishers < 1 || publishers > 100000 || run < 1 ||
	    (duration <= 0 && max_rows <= 0)) {
		usage(stderr);
		return 2;
	}

	char tmpl[4096];
	if (!path) {
		const char *td = getenv("TMPDIR");
		snprintf(tmpl, sizeof(tmpl), "%s/keepmq-sqlite-limit-%d.db", td && *td ? td : "/tmp",
		         (int)getpid());
		path = tmpl;
	}
	struct stat st;
	if (stat(path, &st) == 0) {
		fprintf(stderr, "keepmq-sqlite-limit: %s exists; the measurement needs a new file\n",
		        path);
		return 2;
	}

	sqlite3 *db = NULL;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
	                    NULL) != SQLITE_OK)
		return fail(db, path);
	sqlite3_busy_timeout(db, 5000);
	sqlite3_extended_result_codes(db, 1);
	char pragmas[160];
	snprintf(pragmas, sizeof(pragmas),
	         "PRAGMA journal_mode = WAL; PRAGMA synchronous = %s; PRAGMA foreign_keys = OFF;",
	         full ? "FULL" : "NORMAL");
	if (sqlite3_exec(db, pragmas, NULL, NULL, NULL) != SQLITE_OK)
		return fail(db, "pragmas");
	if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(db, sqlite_schema_sql, NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
		return fail(db, "creating the tables");

	sqlite3_stmt *ins = NULL, *begin = NULL, *commit = NULL;
	if (sqlite3_prepare_v3(db, insert_sql, -1, SQLITE_PREPARE_PERSISTENT, &ins, NULL) ||
	    sqlite3_prepare_v3(db, "BEGIN IMMEDIATE", -1, SQLITE_PREPARE_PERSISTENT, &begin, NULL) ||
	    sqlite3_prepare_v3(db, "COMMIT", -1, SQLITE_PREPARE_PERSISTENT, &commit, NULL))
		return fail(db, "prepare");

	/* Per-publisher topic and sender, as the load generator names them. */
	char (*topics)[32] = calloc((size_t)publishers, sizeof(*topics));
	char (*senders)[48] = calloc((size_t)publishers, sizeof(*senders));
	uint8_t *pl = malloc((size_t)payload + 1);
	if (!topics || !senders || !pl) {
		fprintf(stderr, "keepmq-sqlite-limit: out of memory\n");
		return 1;
	}
	for (long i = 0; i < publishers; i++) {
		snprintf(topics[i], sizeof(topics[i]), "bench/%ld", i);
		snprintf(senders[i], sizeof(senders[i]), "lg%d-p%ld", (int)getpid(), i);
	}
	for (long k = 0; k < payload; k++)
		pl[k] = (uint8_t)('a' + k % 26);
	static const char node[] = "keepmq@127.0.0.1";
	static const char hx[] = "0123456789abcdef";
	uint64_t instance = ((uint64_t)getpid() << 32) ^ mono_ns(), last_id = 0;

	long long rows = 0, txns = 0;
	double cpu0 = cpu_seconds();
	uint64_t delay0 = run_delay_ns();
	uint64_t t0 = mono_ns();
	uint64_t deadline = duration > 0 ? t0 + (uint64_t)(duration * 1e9) : UINT64_MAX;
	uint64_t commit_ns = 0, commit_max_ns = 0;
	for (;;) {
		if (max_rows > 0 && rows >= max_rows)
			break;
		if (max_rows <= 0 && mono_ns() >= deadline)
			break;
		if (sqlite3_step(begin) != SQLITE_DONE)
			return fail(db, "BEGIN");
		sqlite3_reset(begin);
		for (long r = 0; r < per_txn && (max_rows <= 0 || rows < max_rows); r++, rows++) {
			long p = (long)((rows / run) % publishers);
			uint64_t now = wall_ms();
			/* msgid_next: 48-bit ms time << 16 | counter, then 64 instance bits */
			uint64_t v = now << 16;
			if (v <= last_id)
				v = last_id + 1;
			last_id = v;
			uint8_t id[16];
			for (int i = 0; i < 8; i++) {
				id[i] = (uint8_t)(v >> (56 - 8 * i));
				id[8 + i] = (uint8_t)(instance >> (56 - 8 * i));
			}
			char hex[33];
			for (int i = 0; i < 16; i++) {
				hex[2 * i] = hx[id[i] >> 4];
				hex[2 * i + 1] = hx[id[i] & 15];
			}
			hex[32] = 0;
			/* sql_datetime */
			char at[20];
			time_t t = (time_t)(now / 1000);
			struct tm tm;
			gmtime_r(&t, &tm);
			strftime(at, sizeof(at), "%Y-%m-%d %H:%M:%S", &tm);
			/* the first bytes vary per message, like the loadgen's header */
			for (int i = 0; i < 8 && i < payload; i++)
				pl[i] = (uint8_t)((uint64_t)rows >> (8 * i));
			if (sqlite3_bind_text64(ins, 1, hex, 32, SQLITE_STATIC, SQLITE_UTF8) ||
			    sqlite3_bind_text64(ins, 2, topics[p], strlen(topics[p]), SQLITE_STATIC,
			                        SQLITE_UTF8) ||
			    sqlite3_bind_text64(ins, 3, senders[p], strlen(senders[p]), SQLITE_STATIC,
			                        SQLITE_UTF8) ||
			    sqlite3_bind_text64(ins, 4, node, sizeof(node) - 1, SQLITE_STATIC, SQLITE_UTF8) ||
			    sqlite3_bind_int64(ins, 5, 1) || sqlite3_bind_int64(ins, 6, 0) ||
			    sqlite3_bind_blob64(ins, 7, payload ? (const void *)pl : "", (sqlite3_uint64)payload,
			                        SQLITE_STATIC) ||
			    sqlite3_bind_text64(ins, 8, at, 19, SQLITE_STATIC, SQLITE_UTF8))
				return fail(db, "bind");
			if (sqlite3_step(ins) != SQLITE_DONE)
				return fail(db, "INSERT");
			sqlite3_reset(ins);
			sqlite3_clear_bindings(ins);
		}
		uint64_t c0 = mono_ns();
		if (sqlite3_step(commit) != SQLITE_DONE)
			return fail(db, "COMMIT");
		sqlite3_reset(commit);
		uint64_t cd = mono_ns() - c0;
		commit_ns += cd;
		if (cd > commit_max_ns)
			commit_max_ns = cd;
		txns++;
	}
	double secs = (double)(mono_ns() - t0) / 1e9;
	double cpu = cpu_seconds() - cpu0;
	double waited = (double)(run_delay_ns() - delay0) / 1e9;

	sqlite3_stmt *cnt = NULL;
	long long counted = -1;
	if (sqlite3_prepare_v2(db, "SELECT count(*) FROM mqtt_msg", -1, &cnt, NULL) == SQLITE_OK &&
	    sqlite3_step(cnt) == SQLITE_ROW)
		counted = sqlite3_column_int64(cnt, 0);
	sqlite3_finalize(cnt);
	sqlite3_finalize(ins);
	sqlite3_finalize(begin);
	sqlite3_finalize(commit);
	sqlite3_close_v2(db);
	long long bytes = stat(path, &st) == 0 ? (long long)st.st_size : -1;
	if (!keep) {
		char side[4200];
		unlink(path);
		snprintf(side, sizeof(side), "%s-wal", path);
		unlink(side);
		snprintf(side, sizeof(side), "%s-shm", path);
		unlink(side);
	}

	double rate = secs > 0 ? (double)rows / secs : 0;
	double commit_avg_us = txns ? (double)commit_ns / (double)txns / 1e3 : 0;
	if (json) {
		printf("{\"mode\":\"sqlite-limit\",\"sqlite_version\":\"%s\",\"rows_per_txn\":%ld,"
		       "\"payload\":%ld,\"publishers\":%ld,\"run\":%ld,\"synchronous\":\"%s\",\"rows\":%lld,"
		       "\"counted\":%lld,\"txns\":%lld,\"seconds\":%.3f,\"rows_per_s\":%.1f,"
		       "\"txn_per_s\":%.1f,\"commit_avg_us\":%.1f,\"commit_max_us\":%.1f,"
		       "\"cpu_s\":%.3f,\"run_delay_s\":%.3f,\"db_bytes\":%lld,\"ok\":%d}\n",
		       sqlite3_libversion(), per_txn, payload, publishers, run, full ? "full" : "normal", rows,
		       counted, txns, secs, rate, secs > 0 ? (double)txns / secs : 0, commit_avg_us,
		       (double)commit_max_ns / 1e3, cpu, waited, bytes, counted == rows);
	} else {
		printf("sqlite_version       %s\nrows_per_txn         %ld\npayload              %ld\n"
		       "synchronous          %s\nrows                 %lld\ncounted              %lld\n"
		       "txns                 %lld\nseconds              %.3f\nrows_per_s           %.1f\n"
		       "txn_per_s            %.1f\ncommit_avg_us        %.1f\ncommit_max_us        %.1f\n"
		       "cpu_s                %.3f\nrun_delay_s          %.3f\ndb_bytes             %lld\n",
		       sqlite3_libversion(), per_txn, payload, full ? "full" : "normal", rows, counted,
		       txns, secs, rate, secs > 0 ? (double)txns / secs : 0, commit_avg_us,
		       (double)commit_max_ns / 1e3, cpu, waited, bytes);
	}
	free(topics);
	free(senders);
	free(pl);
	return counted == rows ? 0 : 1;
}
