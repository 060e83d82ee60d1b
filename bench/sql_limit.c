/*
 * sql_limit.c - keepmq-sql-limit: how fast a MariaDB / MySQL or PostgreSQL
 * server inserts QoS 1 messages into keepmq's mqtt_msg table, with the
 * statement and transaction shape of keepmq's SQL backends and nothing else
 * in the way (bench/sqlserver.sh builds and runs it).
 *
 * Design
 * ------
 * --conns C threads, each with one connection (TCP, like the broker's pool),
 * start together and for --seconds seconds each repeat one transaction:
 *
 *   MySQL:       autocommit off (as src/backends/mysql/mysql.c), one
 *                server-side prepared multi-row INSERT of --rows rows
 *                (mysql_stmt_execute), then mysql_commit;
 *   PostgreSQL:  BEGIN, PQexecPrepared of the multi-row INSERT, COMMIT
 *                (as src/backends/pgsql/pgsql.c: text parameters, the
 *                payload as a binary bytea parameter).
 *
 * The INSERT is the backends' text (src/backends/sql/batch.c multi_text with
 * the dialect's head and tail): "INSERT INTO mqtt_msg (msgid, topic, sender,
 * node, qos, retain, payload, arrived) VALUES (?, ...), ... ON DUPLICATE KEY
 * UPDATE id = id" (MySQL) or "... ($1, ...), ... ON CONFLICT DO NOTHING"
 * (PostgreSQL), prepared once per connection. Every row as the broker writes
 * it: msgid = the broker's msgid_next layout as 32 hex digits (ms << 16,
 * growing, then a 64-bit random instance per connection), topic bench/<p>,
 * sender <prefix>-p<p>, node keepmq@127.0.0.1, qos 1, retain 0, a --payload
 * byte payload (bytes 8-15: publisher index and sequence, little endian, as
 * keepmq-loadgen's), arrived = UTC 'YYYY-MM-DD HH:MM:SS'. All rows of one
 * statement come from one publisher p; consecutive statements of a
 * connection take the next publisher (--publishers, 10): the broker's
 * batches hold the bursts of the one or two publishers whose client ids
 * hash to the connection.
 *
 * Output (stdout): one flat JSON object: rows committed, transactions,
 * seconds (from the common start to the last thread's last commit),
 * rows_per_s, errors. Exit 1 on any error.
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <mysql.h>

static const char *db = "mysql", *host = "127.0.0.1", *user = "keepmq", *password = "",
                  *database = "mqtt", *prefix = "rb44", *node = "keepmq@127.0.0.1";
static int port, conns = 1, rows = 64, publishers = 10, payload_len = 64;
static double seconds = 10;

static pthread_barrier_t start_barrier;
static double t_start, t_end;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct worker {
	int idx;
	uint64_t instance, last, seq[256];
	long long rows, txns;
	int errors;
	char err[512];
	double done_at;
} worker;

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The broker's msgid_next + msgid_to_hex. */
static void next_id(worker *w, char out[33])
{
	uint64_t v = now_ms() << 16;
	if (v <= w->last)
		v = w->last + 1;
	w->last = v;
	snprintf(out, 33, "%016" PRIx64 "%016" PRIx64, v, w->instance);
}

static void datetime(char out[20])
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 20, "%Y-%m-%d %H:%M:%S", &tm);
}

static char *insert_text(void)
{
	char *t = malloc((size_t)rows * 64 + 256), *o = t;
	o += sprintf(o, "INSERT INTO mqtt_msg (msgid, topic, sender, node, qos, retain, payload, "
	                "arrived) VALUES ");
	for (int r = 0; r < rows; r++) {
		o += sprintf(o, "%s(", r ? ", " : "");
		for (int k = 0; k < 8; k++) {
			if (db[0] == 'p')
				o += sprintf(o, "%s$%d", k ? ", " : "", r * 8 + k + 1);
			else
				o += sprintf(o, "%s?", k ? ", " : "");
		}
		*o++ = ')';
	}
	sprintf(o, "%s", db[0] == 'p' ? " ON CONFLICT DO NOTHING" : " ON DUPLICATE KEY UPDATE id = id");
	return t;
}

/* One statement's values: ids[r], topic, sender, payloads[r], at. */
typedef struct stmt_vals {
	char (*ids)[33];
	char topic[32], sender[64], at[20];
	unsigned char *payloads;
} stmt_vals;

static void fill(worker *w, stmt_vals *sv, long long k)
{
	int p = (int)((w->idx + k) % publishers);
	snprintf(sv->topic, sizeof(sv->topic), "bench/%d", p);
	snprintf(sv->sender, sizeof(sv->sender), "%s-p%d", prefix, p);
	datetime(sv->at);
	for (int r = 0; r < rows; r++) {
		next_id(w, sv->ids[r]);
		unsigned char *pl = sv->payloads + (size_t)r * payload_len;
		uint64_t ms = now_ms();
		uint32_t pi = (uint32_t)p, s = (uint32_t)w->seq[p]++;
		memset(pl, 'p', payload_len);
		if (payload_len >= 16) {
			memcpy(pl, &ms, 8);
			memcpy(pl + 8, &pi, 4);
			memcpy(pl + 12, &s, 4);
		}
	}
}

static void *run_mysql(void *arg)
{
	worker *w = arg;
	MYSQL *m = mysql_init(NULL);
	int nv = rows * 8;
	MYSQL_BIND *b = calloc((size_t)nv, sizeof(*b));
	unsigned long *lens = calloc((size_t)nv, sizeof(*lens));
	stmt_vals sv = {.ids = malloc((size_t)rows * 33),
	                .payloads = malloc((size_t)rows * payload_len)};
	long long one = 1, zero = 0;
	unsigned long nodelen = strlen(node);
	char *text = insert_text();
	MYSQL_STMT *st = NULL;
	int ok = m && mysql_real_connect(m, host, user, password, database, port, NULL, 0) &&
	         !mysql_set_character_set(m, "utf8mb4") && !mysql_autocommit(m, 0) &&
	         !mysql_query(m, "SET time_zone = '+00:00'");
	if (ok) {
		st = mysql_stmt_init(m);
		ok = st && !mysql_stmt_prepare(st, text, (unsigned long)strlen(text));
	}
	if (!ok) {
		snprintf(w->err, sizeof(w->err), "connect/prepare: %s",
		         st ? mysql_stmt_error(st) : m ? mysql_error(m) : "out of memory");
		w->errors++;
	}
	pthread_barrier_wait(&start_barrier);
	double end = t_start + seconds;
	for (long long k = 0; ok && now_s() < end; k++) {
		fill(w, &sv, k);
		unsigned long tl = strlen(sv.topic), sl = strlen(sv.sender), al = strlen(sv.at);
		for (int r = 0; r < rows; r++) {
			MYSQL_BIND *x = b + r * 8;
			unsigned long *l = lens + r * 8;
			l[0] = 32, l[1] = tl, l[2] = sl, l[3] = nodelen, l[6] = (unsigned long)payload_len,
			l[7] = al;
			x[0] = (MYSQL_BIND){.buffer_type = MYSQL_TYPE_STRING, .buffer = sv.ids[r], .length = &l[0]};
			x[1] = (MYSQL_BIND){.buffer_type = MYSQL_TYPE_STRING, .buffer = sv.topic, .length = &l[1]};
			x[2] = (MYSQL_BIND){.buffer_type = MYSQL_TYPE_STRING, .buffer = sv.sender, .length = &l[2]};
			x[3] = (MYSQL_BIND){.buffer_type = MYSQL_TYPE_STRING, .buffer = (char *)node, .length = &l[3]};
			x[4] = (MYSQL_BIND){.buffer_type = MYSQL_TYPE_LONGLONG, .buffer = &one};
			x[5] = (MYSQL_BIND){.buffer_type = MYSQL_TYPE_LONGLONG, .buffer = &zero};
			x[6] = (MYSQL_BIND){.buffer_type = MYSQL_TYPE_BLOB,
			                    .buffer = sv.payloads + (size_t)r * payload_len, .length = &l[6]};
			x[7] = (MYSQL_BIND){.buffer_type = MYSQL_TYPE_STRING, .buffer = sv.at, .length = &l[7]};
		}
		if (mysql_stmt_bind_param(st, b) || mysql_stmt_execute(st) || mysql_commit(m)) {
			snprintf(w->err, sizeof(w->err), "%s", mysql_stmt_errno(st) ? mysql_stmt_error(st) : mysql_error(m));
			w->errors++;
			break;
		}
		w->rows += rows;
		w->txns++;
	}
	w->done_at = now_s();
	if (st)
		mysql_stmt_close(st);
	mysql_close(m);
	free(text), free(b), free(lens), free(sv.ids), free(sv.payloads);
	mysql_thread_end();
	return NULL;
}

static int pg_ok(PGresult *r, worker *w, const char *what)
{
	ExecStatusType s = PQresultStatus(r);
	int ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
	if (!ok) {
		snprintf(w->err, sizeof(w->err), "%s: %s", what, PQresultErrorMessage(r));
		w->errors++;
	}
	PQclear(r);
	return ok;
}

static void *run_pgsql(void *arg)
{
	worker *w = arg;
	char conninfo[512], portstr[16];
	snprintf(portstr, sizeof(portstr), "%d", port);
	snprintf(conninfo, sizeof(conninfo), "host=%s port=%s user=%s password=%s dbname=%s", host,
	         portstr, user, password, database);
	PGconn *c = PQconnectdb(conninfo);
	int nv = rows * 8;
	const char **vals = calloc((size_t)nv, sizeof(*vals));
	int *lens = calloc((size_t)nv, sizeof(*lens)), *fmts = calloc((size_t)nv, sizeof(*fmts));
	stmt_vals sv = {.ids = malloc((size_t)rows * 33),
	                .payloads = malloc((size_t)rows * payload_len)};
	char *text = insert_text();
	int ok = PQstatus(c) == CONNECTION_OK;
	if (!ok) {
		snprintf(w->err, sizeof(w->err), "connect: %s", PQerrorMessage(c));
		w->errors++;
	} else {
		ok = pg_ok(PQexec(c, "SET TIME ZONE 'UTC'"), w, "set") &&
		     pg_ok(PQprepare(c, "ins", text, 0, NULL), w, "prepare");
	}
	pthread_barrier_wait(&start_barrier);
	double end = t_start + seconds;
	for (long long k = 0; ok && now_s() < end; k++) {
		fill(w, &sv, k);
		for (int r = 0; r < rows; r++) {
			const char **v = vals + r * 8;
			v[0] = sv.ids[r], v[1] = sv.topic, v[2] = sv.sender, v[3] = node, v[4] = "1",
			v[5] = "0", v[6] = (const char *)sv.payloads + (size_t)r * payload_len, v[7] = sv.at;
			lens[r * 8 + 6] = payload_len;
			fmts[r * 8 + 6] = 1;
		}
		if (!pg_ok(PQexec(c, "BEGIN"), w, "BEGIN") ||
		    !pg_ok(PQexecPrepared(c, "ins", nv, vals, lens, fmts, 1), w, "INSERT") ||
		    !pg_ok(PQexec(c, "COMMIT"), w, "COMMIT"))
			break;
		w->rows += rows;
		w->txns++;
	}
	w->done_at = now_s();
	PQfinish(c);
	free(text), free(vals), free(lens), free(fmts), free(sv.ids), free(sv.payloads);
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"db", 1, 0, 'd'},        {"host", 1, 0, 'h'},    {"port", 1, 0, 'P'},
		{"user", 1, 0, 'u'},      {"password", 1, 0, 'p'}, {"database", 1, 0, 'D'},
		{"conns", 1, 0, 'c'},     {"seconds", 1, 0, 's'}, {"rows", 1, 0, 'r'},
		{"publishers", 1, 0, 'n'}, {"payload", 1, 0, 'l'}, {"prefix", 1, 0, 'x'},
		{"node", 1, 0, 'N'},      {0, 0, 0, 0}};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'd': db = optarg; break;
		case 'h': host = optarg; break;
		case 'P': port = atoi(optarg); break;
		case 'u': user = optarg; break;
		case 'p': password = optarg; break;
		case 'D': database = optarg; break;
		case 'c': conns = atoi(optarg); break;
		case 's': seconds = atof(optarg); break;
		case 'r': rows = atoi(optarg); break;
		case 'n': publishers = atoi(optarg); break;
		case 'l': payload_len = atoi(optarg); break;
		case 'x': prefix = optarg; break;
		case 'N': node = optarg; break;
		default:
			fprintf(stderr, "usage: keepmq-sql-limit --db mysql|pgsql --port P [--host H] "
			                "[--user U] [--password W] [--database D] [--conns C] "
			                "[--seconds S] [--rows R] [--publishers N] [--payload B] "
			                "[--prefix S] [--node N]\n");
			return 2;
		}
	}
	if ((strcmp(db, "mysql") && strcmp(db, "pgsql")) || !port || conns < 1 || conns > 256 ||
	    rows < 1 || rows > 1000 || publishers < 1 || publishers > 256 || payload_len < 1) {
		fprintf(stderr, "keepmq-sql-limit: bad arguments\n");
		return 2;
	}
	if (db[0] == 'm')
		mysql_library_init(0, NULL, NULL);
	worker *ws = calloc((size_t)conns, sizeof(*ws));
	pthread_t *th = calloc((size_t)conns, sizeof(*th));
	srand((unsigned)time(NULL) ^ (unsigned)getpid());
	pthread_barrier_init(&start_barrier, NULL, (unsigned)conns + 1);
	for (int i = 0; i < conns; i++) {
		ws[i].idx = i;
		ws[i].instance = ((uint64_t)rand() << 40 ^ (uint64_t)rand() << 16) & ~0xffull;
		ws[i].instance |= (uint64_t)i;
		pthread_create(&th[i], NULL, db[0] == 'm' ? run_mysql : run_pgsql, &ws[i]);
	}
	t_start = now_s(); /* the workers read it once the barrier opens */
	pthread_barrier_wait(&start_barrier);
	long long total = 0, txns = 0;
	int errors = 0;
	const char *err = "";
	t_end = t_start;
	for (int i = 0; i < conns; i++) {
		pthread_join(th[i], NULL);
		pthread_mutex_lock(&mu);
		total += ws[i].rows;
		txns += ws[i].txns;
		errors += ws[i].errors;
		if (ws[i].errors && !*err)
			err = ws[i].err;
		if (ws[i].done_at > t_end)
			t_end = ws[i].done_at;
		pthread_mutex_unlock(&mu);
	}
	double el = t_end - t_start;
	printf("{\"db\":\"%s\",\"conns\":%d,\"rows_per_stmt\":%d,\"rows\":%lld,\"txns\":%lld,"
	       "\"seconds\":%.3f,\"rows_per_s\":%.1f,\"errors\":%d,\"error\":\"",
	       db, conns, rows, total, txns, el, el > 0 ? total / el : 0.0, errors);
	for (const char *p = err; *p; p++)
		if (*p != '"' && *p != '\\' && *p != '\n')
			putchar(*p);
	printf("\"}\n");
	return errors ? 1 : 0;
}
