#!/usr/bin/env bash
# sqlserver.sh - QoS 1 publishing persisted into MariaDB and PostgreSQL by
# on_message_publish: keepmq with no backend, with the mysql / pgsql backend
# in async and in sync delivery mode, and what the database server itself
# inserts into the same table on this machine (the limit).
#
# Design
# ------
# One private server per database for the whole run, in a temp directory,
# on a free loopback port, started as root (PostgreSQL as user postgres):
#   MariaDB     mariadb-install-db --no-defaults, then mariadbd --no-defaults
#               --innodb-buffer-pool-size=256M, utf8mb4, binary log off (the
#               default), innodb_flush_log_at_trx_commit = 1 (--durability
#               strict, the default) or 2 (--durability relaxed);
#   PostgreSQL  15: initdb -A trust -E UTF8 --locale=C.UTF-8, pg_ctl start,
#               shared_buffers = 256MB (as MariaDB's buffer pool), TCP logins
#               by scram-sha-256, fsync = on, synchronous_commit = on
#               (strict) or off (relaxed).
# The broker logs in over TCP as keepmq / keepmq-pw, which owns (PostgreSQL)
# or has every privilege on (MariaDB) the database mqtt. Every run gets a
# fresh mqtt database (DROP DATABASE + CREATE DATABASE, then the server is
# left to go quiet: its CPU time moves by at most 2 ticks in each of three
# 0.2 s polls, at most 15 s), so every run starts from an empty mqtt_msg.
# The broker creates its tables itself (etc/sql/<db>.sql); the limit's runs
# create them from the same file.
#
# Rows (per database; every keepmq run a fresh broker, port, directory):
#   none      keepmq, no backend
#   async     keepmq + backend.<db>, delivery_mode = async, pool_size 8 (the
#             default), batch_size 100 (the default), the one rule
#             backend.<db>.hook.message.publish.1 = on_message_publish
#   sync      the same, delivery_mode = sync (PUBACK after the COMMIT)
#   MODE-pN, MODE-bN (e.g. async-p2, sync-b64, async-p16-b1000): the same
#             with pool_size N / batch_size N (for --rows)
#   limit     the database alone, with the broker's statement shape: a
#             transaction = one prepared 64-row INSERT of mqtt_msg rows as
#             the broker writes them (same table, same indexes, same
#             ON DUPLICATE KEY / ON CONFLICT tail), each from --limit-conns
#             concurrent connections (1, 4, 8) for --limit-seconds (10), on
#             a fresh database each:
#               MariaDB:    keepmq-sql-limit (bench/sql_limit.c: libmariadb,
#                           server-side prepared statement, autocommit off +
#                           mysql_commit, as the backend does)
#               PostgreSQL: pgbench -n -M prepared -f limit.sql -c C -j
#                           min(C, 2) -T S: BEGIN; INSERT 64 rows; COMMIT;
#                           (msgids from a sequence, growing like the
#                           broker's), and keepmq-sql-limit --db pgsql (the
#                           broker's exact statement: 512 bound parameters,
#                           payload as binary bytea) as a cross-check
#             limit = the best of these (rows/s) in each round; the table
#             shows every one.
#   bulk      the server's bulk loader on a fresh database, one statement,
#             --bulk-rows (1,000,000) rows of the same shape from a CSV
#             file the server reads itself: LOAD DATA INFILE (MariaDB),
#             COPY ... FROM 'file' (PostgreSQL): rows / elapsed. A second
#             reference, not the limit: the broker cannot load in bulk.
# Runs alternate none, async, sync, limit, bulk, none, ... --repeat times
# per database (MariaDB first, then PostgreSQL), so drift of the shared
# machine hits every row alike; each cell is the median of the repeats.
#
# Load (keepmq rows): as bench/redis.sh: keepmq-loadgen pubsub --topology
# fanin --publishers 10 --subscribers 1 --qos 1 --payload 64 --window 64
# --max-backlog 64 --warmup 1 --duration 5 --clients-prefix rb44.
#
# After each persisted run the driver polls a cheap progress counter,
# SELECT max(id) FROM mqtt_msg (AUTO_INCREMENT / BIGSERIAL, committed rows
# only), every 0.2 s and, once it reaches the PUBACKs received, SELECT
# count(*) FROM mqtt_msg, until the rows equal the PUBACKs (async: once the
# queue has drained) or nothing moves for 5 s. Persisted msg/s = rows /
# (load start -> the last change of max(id) seen). Then it waits until the broker is idle
# and checks the rows themselves: bytes 8-15 of every payload are the
# load generator's publisher index and sequence number, so duplicates =
# rows - distinct (publisher, sequence) and holes = sequence numbers below
# a publisher's highest stored one that are not stored. Fewer rows than
# PUBACKs is flagged MISSING, a duplicate DUP, a hole HOLES, any line in
# the broker's log (log.level = warning) log. Also recorded: the broker's
# CPU (per thread), the database server's CPU (mariadbd; the postmaster
# with all its processes), commits and rows per commit.
#
# The machine is shared: before every measurement the driver waits (at most
# --quiet-wait s) until the whole machine has used at most --quiet-pct % of
# one core for a second, and during each it records what everything else
# used (machine busy from /proc/stat - broker - server - load generator or
# client): the Others column, 0 when nobody else disturbed the run.
#
# Needs bash, coreutils, awk, ss, cmake, mariadb-install-db, mariadbd and the
# mariadb client, PostgreSQL 15 (initdb, pg_ctl under /usr/lib/postgresql/15/bin),
# psql, pgbench, runuser, libmariadb-dev and libpq-dev (for keepmq-sql-limit).
# Run as root. Writes bench/results/sqlserver-<UTC time>.md and prints it.
# Nothing asserts on timings.
#
# Usage: bench/sqlserver.sh [--db mysql|pgsql|both] [--quick] [--repeat R]
#                           [--durability strict|relaxed] [--rows LIST] ...
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB_NAME=sqlserver.sh
# shellcheck source=bench/lib.sh
. "$ROOT/bench/lib.sh"

BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
KEEPMQ_BIN=${KEEPMQ_BIN:-$BUILD_DIR/keepmq}
LOADGEN=${LOADGEN:-$BUILD_DIR/keepmq-loadgen}
SQL_LIMIT=${SQL_LIMIT:-$BUILD_DIR/keepmq-sql-limit}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
MARIADBD=${MARIADBD:-mariadbd}
OUTDIR=$ROOT/bench/results
DBS="mysql pgsql"
REPEAT=3
QUICK=0
ROWS_ARG=""
DURATION=""
WARMUP=""
PUBLISHERS=10
PAYLOAD=64
WINDOW=64
MAX_BACKLOG=64
RATE=0
DRAIN_TIMEOUT=300
LIMIT_SECONDS=""
LIMIT_CONNS="1 4 8"
LIMIT_ROWS=64
PGBENCH_CONNS=-
BULK_ROWS=""
DURABILITY=strict
PREFIX=rb44
QUIET_MAX=25
QUIET_WAIT=120
BUILD=1
KEEP=0
ORIG_ARGS=("$@")
USER_NAME=keepmq
USER_PW=keepmq-pw

usage() {
	sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	cat <<'EOF'
Options:
  --db D             mysql, pgsql or both (both)
  --quick            short runs (warm-up 0.5 s, 2 s measured, limit 3 s per
                     connection count, bulk 200000 rows), one repeat
  --repeat R         rounds, median reported (3; quick: 1)
  --rows LIST        rows to run, in this order ("none async sync limit bulk");
                     also MODE-pN / MODE-bN (pool_size / batch_size N)
  --durability D     strict (production defaults: innodb_flush_log_at_trx_commit
                     = 1, synchronous_commit = on) or relaxed (2 / off)
  --seconds S        measured seconds per keepmq run (5; quick: 2)
  --warmup S         warm-up seconds (1; quick: 0.5)
  --limit-seconds S  seconds per limit measurement (10; quick: 3)
  --limit-conns L    connection counts of the limit ("1 4 8")
  --pgbench-conns L  connection counts of the pgbench limit (as --limit-conns;
                     "" for none)
  --limit-rows L     rows per INSERT of keepmq-sql-limit ("64"; e.g. "1 4 16 64":
                     the other sizes are shown, but only 64 makes the limit)
  --bulk-rows N      rows of the bulk load (1000000; quick: 200000)
  --rate R           offer R msg/s in total instead of saturating (0)
  --window N         unacknowledged PUBLISHes per publisher (64)
  --publishers P     publishers (10)
  --drain-timeout S  longest wait for an async queue to drain (300)
  --quiet-pct P      before every measurement wait until the whole machine
                     used at most P % of one core over 1 s (25) ...
  --quiet-wait S     ... for at most S seconds (120; then run anyway, flagged)
  --no-build         do not (re)build keepmq, keepmq-loadgen, keepmq-sql-limit
  --keep             keep the temp directory (servers' data and logs, configs)
Environment: BUILD_DIR (build-bench), KEEPMQ_BIN, LOADGEN, SQL_LIMIT, PG_BIN,
MARIADBD.
EOF
}

while [ $# -gt 0 ]; do
	case "$1" in
	--db) case $2 in both) DBS="mysql pgsql" ;; mysql | pgsql) DBS=$2 ;; *) echo "sqlserver.sh: --db mysql|pgsql|both" >&2; exit 2 ;; esac; shift ;;
	--quick) QUICK=1 ;;
	--repeat) REPEAT=$2; shift ;;
	--rows | --only) ROWS_ARG=$2; shift ;;
	--durability) DURABILITY=$2; shift ;;
	--seconds | --duration) DURATION=$2; shift ;;
	--warmup) WARMUP=$2; shift ;;
	--limit-seconds) LIMIT_SECONDS=$2; shift ;;
	--limit-conns) LIMIT_CONNS=$2; shift ;;
	--limit-rows) LIMIT_ROWS=$2; shift ;;
	--pgbench-conns) PGBENCH_CONNS=$2; shift ;;
	--bulk-rows) BULK_ROWS=$2; shift ;;
	--rate) RATE=$2; shift ;;
	--window) WINDOW=$2; shift ;;
	--publishers) PUBLISHERS=$2; shift ;;
	--drain-timeout) DRAIN_TIMEOUT=$2; shift ;;
	--quiet-pct) QUIET_MAX=$2; shift ;;
	--quiet-wait) QUIET_WAIT=$2; shift ;;
	--no-build) BUILD=0 ;;
	--keep) KEEP=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "sqlserver.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
case $DURABILITY in strict | relaxed) ;; *) log "--durability strict|relaxed"; exit 2 ;; esac
[ "$PGBENCH_CONNS" = - ] && PGBENCH_CONNS=$LIMIT_CONNS

if [ "$QUICK" = 1 ]; then
	: "${DURATION:=2}" "${WARMUP:=0.5}" "${LIMIT_SECONDS:=3}" "${BULK_ROWS:=200000}"
	[[ " ${ORIG_ARGS[*]} " == *" --repeat "* ]] || REPEAT=1
else
	: "${DURATION:=5}" "${WARMUP:=1}" "${LIMIT_SECONDS:=10}" "${BULK_ROWS:=1000000}"
fi
read -r -a ROWS <<<"${ROWS_ARG:-none async sync limit bulk}"
for r in "${ROWS[@]}"; do
	[[ $r =~ ^(none|limit|bulk|(async|sync)(-p[0-9]+)?(-b[0-9]+)?)$ ]] ||
		{ log "unknown row $r (none, async, sync, MODE-pN, MODE-bN, limit, bulk)"; exit 2; }
done
[ "$(id -u)" = 0 ] || { log "run as root (the servers run as root and postgres)"; exit 1; }
for b in mariadb-install-db "$MARIADBD" mariadb psql pgbench runuser "$PG_BIN/initdb" "$PG_BIN/pg_ctl"; do
	command -v "$b" >/dev/null || { log "missing $b"; exit 1; }
done

if [ "$BUILD" = 1 ]; then
	log "building keepmq, keepmq-loadgen and keepmq-sql-limit in $BUILD_DIR"
	build_keepmq "$BUILD_DIR" "$ROOT" || exit 1
	cmake --build "$BUILD_DIR" -j2 --target keepmq-sql-limit >/dev/null ||
		{ log "building keepmq-sql-limit failed"; exit 1; }
fi
for b in "$KEEPMQ_BIN" "$LOADGEN" "$SQL_LIMIT"; do
	[ -x "$b" ] || { log "missing $b (build it, or drop --no-build)"; exit 1; }
done

TMP=$(mktemp -d /tmp/keepmq-sql.XXXXXX)
chmod 711 "$TMP" # postgres traverses it to its directory
BROKER_PID=""
DB_PID=""
DB=""
cleanup() {
	[ -n "$BROKER_PID" ] && kill -9 "$BROKER_PID" 2>/dev/null
	[ -n "$DB" ] && db_stop
	if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LG_TIMEOUT=()
command -v timeout >/dev/null && LG_TIMEOUT=(timeout -k 5 600)

# ----------------------------------------------------------------- servers
# DB: mysql or pgsql; DBDIR its directory; DBPORT; DB_PID (mariadbd, or the
# postmaster).
my_admin() { mariadb --no-defaults -S "$DBDIR/mysql.sock" -uroot -N -B "$@"; }
pg_admin() { psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$DBDIR" -p "$DBPORT" -U postgres "$@"; }
# a query on the mqtt database as administrator, one value per line
q() {
	if [ "$DB" = mysql ]; then my_admin mqtt -e "$1" 2>>"$DBDIR/queries.err"
	else pg_admin -d mqtt -c "$1" 2>>"$DBDIR/queries.err"; fi
}
db_cpu() { if [ "$DB" = mysql ]; then cpu_s "$DB_PID"; else tree_cpu_s "$DB_PID"; fi; }
db_ticks() { db_cpu | awk -v t="$CLK_TCK" '{printf "%d", $1 * t}'; }
db_quiet() { wait_quiet db_ticks 15 2; }

mysql_start() {
	DBDIR=$TMP/mysql
	mkdir -p "$DBDIR"
	mariadb-install-db --no-defaults --datadir="$DBDIR/data" --user=root \
		--auth-root-authentication-method=socket --skip-test-db >"$DBDIR/install-db.log" 2>&1 ||
		{ log "mariadb-install-db failed: $(tail -3 "$DBDIR/install-db.log")"; return 1; }
	DBPORT=$(free_port)
	local flush=1
	[ "$DURABILITY" = relaxed ] && flush=2
	MYSQLD_ARGS=(--no-defaults --user=root --datadir="$DBDIR/data" --socket="$DBDIR/mysql.sock"
		--port="$DBPORT" --bind-address=127.0.0.1 --skip-name-resolve
		--character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci
		--innodb-buffer-pool-size=256M "--innodb-flush-log-at-trx-commit=$flush"
		--max-connections=200 --secure-file-priv="$DBDIR"
		--log-error="$DBDIR/mariadb.log" --pid-file="$DBDIR/mariadb.pid")
	"$MARIADBD" "${MYSQLD_ARGS[@]}" </dev/null >/dev/null 2>&1 &
	DB_PID=$!
	local _
	for _ in $(seq 1 300); do
		kill -0 "$DB_PID" 2>/dev/null || { log "mariadbd exited: $(tail -3 "$DBDIR/mariadb.log")"; DB_PID=""; return 1; }
		my_admin -e 'SELECT 1' >/dev/null 2>&1 && break
		sleep 0.1
	done
	my_admin -e "CREATE USER '$USER_NAME'@'127.0.0.1' IDENTIFIED BY '$USER_PW';
		GRANT ALL PRIVILEGES ON mqtt.* TO '$USER_NAME'@'127.0.0.1';" ||
		{ log "mariadb: creating the user failed"; return 1; }
}

pgctl() { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$DBDIR/data" "$@"; }
pgsql_start() {
	DBDIR=$TMP/pgsql
	mkdir -p "$DBDIR"
	chown postgres: "$DBDIR"
	chmod 700 "$DBDIR"
	runuser -u postgres -- "$PG_BIN/initdb" -D "$DBDIR/data" -U postgres -A trust -E UTF8 \
		--locale=C.UTF-8 >"$DBDIR/initdb.log" 2>&1 ||
		{ log "initdb failed: $(tail -3 "$DBDIR/initdb.log")"; return 1; }
	printf 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n' >"$DBDIR/data/pg_hba.conf"
	DBPORT=$(free_port)
	local sc=on
	[ "$DURABILITY" = relaxed ] && sc=off
	PG_OPTS="-p $DBPORT -k $DBDIR -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c fsync=on -c synchronous_commit=$sc -c max_connections=200"
	pgctl -l "$DBDIR/postgres.log" -w -t 60 -o "$PG_OPTS" start >/dev/null 2>&1 ||
		{ log "pg_ctl start failed: $(tail -3 "$DBDIR/postgres.log")"; return 1; }
	DB_PID=$(head -1 "$DBDIR/data/postmaster.pid")
	pg_admin -d postgres -c "CREATE ROLE $USER_NAME LOGIN PASSWORD '$USER_PW'" ||
		{ log "postgres: creating the role failed"; return 1; }
}

db_start() { # db
	DB=$1
	if [ "$DB" = mysql ]; then mysql_start; else pgsql_start; fi
}

db_stop() {
	if [ "$DB" = mysql ]; then
		stop_pid "$DB_PID" 600
	elif [ -n "$DB_PID" ]; then
		pgctl -m fast -w -t 60 stop >/dev/null 2>&1 || kill -9 "$DB_PID" 2>/dev/null
		# PID 1 may reap the postmaster slowly: wait until it is gone
		local _
		for _ in $(seq 1 100); do [ -e "/proc/$DB_PID" ] || break; sleep 0.1; done
	fi
	DB_PID=""
	DB=""
}

# A fresh, empty database mqtt (tables: the broker creates them, or
# create_tables for the limit).
fresh_db() {
	if [ "$DB" = mysql ]; then
		my_admin -e "DROP DATABASE IF EXISTS mqtt; CREATE DATABASE mqtt CHARACTER SET utf8mb4;"
	else
		pg_admin -d postgres -c "DROP DATABASE IF EXISTS mqtt WITH (FORCE)" 2>/dev/null &&
			pg_admin -d postgres -c "CREATE DATABASE mqtt OWNER $USER_NAME" &&
			pg_admin -d postgres -c "CHECKPOINT"
	fi
}
create_tables() { # as the broker's user, from the broker's schema file
	if [ "$DB" = mysql ]; then
		mariadb --no-defaults -h 127.0.0.1 -P "$DBPORT" -u"$USER_NAME" -p"$USER_PW" mqtt <"$ROOT/etc/sql/mysql.sql"
	else
		PGPASSWORD=$USER_PW psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$DBPORT" -U "$USER_NAME" -d mqtt \
			-f "$ROOT/etc/sql/pgsql.sql" >/dev/null
	fi
}

count_rows() { local c; c=$(q "SELECT count(*) FROM mqtt_msg" | tail -1); [[ $c =~ ^[0-9]+$ ]] && echo "$c" || echo -1; }
# progress: the highest id committed (cheap: the primary key's last entry;
# ids come from AUTO_INCREMENT / BIGSERIAL, so max(id) >= rows, and = rows
# once every insert has committed, unless ids were skipped)
progress() { local c; c=$(q "SELECT coalesce(max(id), 0) FROM mqtt_msg" | tail -1); [[ $c =~ ^[0-9]+$ ]] && echo "$c" || echo -1; }
# commits so far: MariaDB Com_commit (COMMIT statements), PostgreSQL
# pg_stat_database.xact_commit of mqtt (flushed when a backend ends)
commits() {
	if [ "$DB" = mysql ]; then
		my_admin -e "SHOW GLOBAL STATUS LIKE 'Com_commit'" | awk '{print $2}'
	else
		pg_admin -d postgres -c "SELECT coalesce(sum(xact_commit), 0) FROM pg_stat_database WHERE datname = 'mqtt'"
	fi
}
# "rows distinct holes": distinct = distinct (publisher, sequence) in the
# payloads, holes = sequence numbers missing below each publisher's highest
check_rows() {
	local sql
	if [ "$DB" = mysql ]; then
		sql="SELECT CONCAT_WS(' ', COALESCE(SUM(n), 0), COALESCE(SUM(d), 0), COALESCE(SUM(mx + 1 - d), 0)) FROM
			(SELECT pi, COUNT(*) n, COUNT(DISTINCT seq) d, MAX(seq) mx FROM
			 (SELECT CONV(HEX(REVERSE(SUBSTRING(payload, 9, 4))), 16, 10) + 0 pi,
			         CONV(HEX(REVERSE(SUBSTRING(payload, 13, 4))), 16, 10) + 0 seq FROM mqtt_msg) s
			 GROUP BY pi) t"
	else
		sql="SELECT concat_ws(' ', coalesce(sum(n), 0), coalesce(sum(d), 0), coalesce(sum(mx + 1 - d), 0)) FROM
			(SELECT pi, count(*) n, count(DISTINCT seq) d, max(seq) mx FROM
			 (SELECT get_byte(payload, 8) + get_byte(payload, 9) * 256 pi,
			         get_byte(payload, 12)::bigint + get_byte(payload, 13) * 256 + get_byte(payload, 14) * 65536
			           + get_byte(payload, 15)::bigint * 16777216 seq FROM mqtt_msg) s
			 GROUP BY pi) t"
	fi
	q "$sql" | tail -1
}
server_settings() {
	if [ "$DB" = mysql ]; then
		my_admin -e "SELECT CONCAT(VARIABLE_NAME, ' = ', VARIABLE_VALUE) FROM information_schema.GLOBAL_VARIABLES
			WHERE VARIABLE_NAME IN ('INNODB_FLUSH_LOG_AT_TRX_COMMIT', 'INNODB_BUFFER_POOL_SIZE', 'INNODB_LOG_FILE_SIZE',
			'INNODB_FLUSH_METHOD', 'INNODB_DOUBLEWRITE', 'LOG_BIN', 'SYNC_BINLOG', 'INNODB_AUTOINC_LOCK_MODE',
			'TRANSACTION_ISOLATION', 'VERSION') ORDER BY 1" | tr '\n' ';' | sed 's/;$//; s/;/; /g' | tr 'A-Z' 'a-z'
	else
		pg_admin -d postgres -c "SELECT string_agg(name || ' = ' || current_setting(name), '; ' ORDER BY name)
			FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_sync_method',
			'shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'wal_level', 'commit_delay', 'server_version')"
	fi
}
db_version() {
	if [ "$DB" = mysql ]; then "$MARIADBD" --version 2>/dev/null | head -1; else "$PG_BIN/postgres" --version; fi
}

# ------------------------------------------------------------------ broker
pool_size() { [[ $1 =~ -p([0-9]+) ]] && echo "${BASH_REMATCH[1]}" || echo 8; }
batch_size() { [[ $1 =~ -b([0-9]+) ]] && echo "${BASH_REMATCH[1]}" || echo 100; }
mode_of() { echo "${1%%-*}"; }

write_conf() { # row port dbport dir -> config path
	local f=$4/keepmq.conf
	{
		echo "listener.tcp.default = 127.0.0.1:$2"
		echo "log.level = warning"
		if [ "$1" != none ]; then
			echo "backend.$DB.pool1.server = 127.0.0.1:$3"
			if [ "$DB" = mysql ]; then echo "backend.$DB.pool1.user = $USER_NAME"; else echo "backend.$DB.pool1.username = $USER_NAME"; fi
			echo "backend.$DB.pool1.password = $USER_PW"
			echo "backend.$DB.pool1.database = mqtt"
			echo "backend.$DB.pool1.pool_size = $(pool_size "$1")"
			[ "$(batch_size "$1")" != 100 ] && echo "backend.$DB.pool1.batch_size = $(batch_size "$1")"
			echo "backend.$DB.delivery_mode = $(mode_of "$1")"
			echo "backend.$DB.hook.message.publish.1 = {\"topic\": \"#\", \"action\": {\"function\": \"on_message_publish\"}, \"pool\": \"pool1\"}"
		fi
	} >"$f"
	echo "$f"
}

# Waits for the shared machine to be quiet; prints what it saw.
gate() { # key
	if wait_machine_quiet "$QUIET_MAX" "$QUIET_WAIT"; then
		GATE="machine quiet after ${QUIET_WAITED} s ($QUIET_PCT% of a core)"
	else
		add_note "$1" busy-machine
		GATE="machine still busy after ${QUIET_WAITED} s ($QUIET_PCT% of a core)"
	fi
}
# CPU-s of everything else on the machine: machine busy - ours
others_pct() { # jiffies0 jiffies1 ours_cpu_s elapsed -> "others% steal%"
	local m
	m=$(machine_cpu_s "$1" "$2")
	awk -v b="${m% *}" -v st="${m#* }" -v o="$3" -v t="$4" 'BEGIN {x = 100 * (b - o) / t; if (x < 0) x = 0; printf "%.0f %.0f", x, 100 * st / t}'
}

RUNLOG=$TMP/runs.tsv
: >"$RUNLOG"
runlog() { printf '%s\t%s\t%s\t%s\n' "$DB" "$1" "$2" "$3" >>"$RUNLOG"; log "$DB $1 #$2: $3"; }

LG_ARGS=(pubsub --topology fanin --publishers "$PUBLISHERS" --subscribers 1 --qos 1
	--payload "$PAYLOAD" --window "$WINDOW" --max-backlog "$MAX_BACKLOG"
	--warmup "$WARMUP" --duration "$DURATION" --clients-prefix "$PREFIX")
[ "$RATE" != 0 ] && LG_ARGS+=(--rate "$RATE")

run_keepmq() { # row rep
	local row=$1 rep=$2 key="$DB:$1" dir=$TMP/$DB-$1-$2
	mkdir -p "$dir"
	if [ "$row" != none ]; then
		fresh_db || { add_note "$key" db-failed; runlog "$row" "$rep" "fresh database failed"; return; }
		db_quiet
	fi
	gate "$key"
	local port conf
	port=$(free_port)
	conf=$(write_conf "$row" "$port" "$DBPORT" "$dir")
	if ! start_keepmq "$conf" "$dir" "$port"; then
		add_note "$key" start-failed
		runlog "$row" "$rep" "broker did not start: $(head -c 200 "$dir/keepmq.log" | tr '\n' ' ')"
		return
	fi
	if [ "$row" != none ]; then
		# the pool has connected and created the tables
		local _
		for _ in $(seq 1 100); do
			[ "$(count_rows)" = 0 ] && break
			sleep 0.1
		done
		sleep 0.3
	fi
	local out=$dir/loadgen.json cpu0 t0 t1 cpu1 rc rd0 rd1 dcpu0=0 dcpu1=0 com0=0 mj0 mj1 lgcpu TIMEFORMAT='%U %S'
	if [ "$row" != none ]; then dcpu0=$(db_cpu); com0=$(commits); fi
	cpu0=$(cpu_s "$BROKER_PID")
	rd0=$(run_delay_s "$BROKER_PID")
	mj0=$(machine_jiffies)
	t0=$(now)
	{ time { "${LG_TIMEOUT[@]}" "$LOADGEN" "${LG_ARGS[@]}" --port "$port" --json >"$out" 2>"$dir/loadgen.err"; rc=$?; }; } 2>"$dir/loadgen.time"
	t1=$(now)
	mj1=$(machine_jiffies)
	cpu1=$(cpu_s "$BROKER_PID")
	rd1=$(run_delay_s "$BROKER_PID")
	[ "$row" != none ] && dcpu1=$(db_cpu)
	lgcpu=$(awk '{printf "%.2f", $1 + $2}' "$dir/loadgen.time")
	if [ ! -s "$out" ]; then
		add_note "$key" failed
		runlog "$row" "$rep" "load generator failed (exit $rc): $(head -c 200 "$dir/loadgen.err")"
		stop_keepmq
		return
	fi
	local k pub recv acked published lost dup errs
	pub=$(jget "$out" pub_rate) recv=$(jget "$out" recv_rate) acked=$(jget "$out" acked)
	published=$(jget "$out" published) lost=$(jget "$out" lost) dup=$(jget "$out" dup)
	errs=$(jget "$out" errors)
	for k in pub_rate recv_rate lat_p50_us lat_p99_us; do add_val "$key" "$k" "$(jget "$out" "$k")"; done
	[ "$rc" != 0 ] && add_note "$key" "exit-$rc"
	[ "${lost:-0}" != 0 ] && add_note "$key" LOSS
	[ "${dup:-0}" != 0 ] && add_note "$key" DUP
	[ "${errs:-0}" != 0 ] && add_note "$key" errors
	[ "$acked" != "$published" ] && add_note "$key" unacked
	local el cpu_pct
	el=$(sub "$t1" "$t0")
	cpu_pct=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$el" 'BEGIN {printf "%.0f", (t > 0 ? 100 * (b - a) / t : 0)}')
	add_val "$key" cpu_pct "$cpu_pct"
	add_val "$key" cpu_wait "$(sub "$rd1" "$rd0")"
	local oth
	oth=$(others_pct "$mj0" "$mj1" "$(awk -v a="$(sub "$cpu1" "$cpu0")" -v b="$(sub "$dcpu1" "$dcpu0")" -v c="$lgcpu" 'BEGIN {print a + b + c}')" "$el")
	add_val "$key" others_pct "${oth% *}"
	add_val "$key" steal_pct "${oth#* }"
	local summary
	summary="$(fmt "$pub") msg/s acked ($(fmt "$recv") received), p50 $(fmt "$(jget "$out" lat_p50_us)") µs, p99 $(fmt "$(jget "$out" lat_p99_us)") µs, published $published, acked $acked, lost $lost, dup $dup, errors $errs; during the load ($el s) broker CPU ${cpu_pct}% of one core, its threads waited $(sub "$rd1" "$rd0") s for a CPU; load generator $lgcpu CPU-s; everything else on the machine ${oth% *}% of a core, steal ${oth#* }%; before the run: $GATE"
	if [ "$row" = none ]; then
		add_val "$key" hwm_mb "$(hwm_mb "$BROKER_PID")"
		summary="$summary; broker peak RSS $(hwm_mb "$BROKER_PID") MiB; thread CPU s (creation order: main, I/O workers): $(thread_cpu "$BROKER_PID")"
		stop_keepmq
		runlog "$row" "$rep" "$summary"
		return
	fi

	# --- persisted: wait for the rows
	local p_end p t2 last_p last_t deadline tn spill c=-1
	p_end=$(progress)
	spill=$(cat "$dir"/data/spill/*.spill 2>/dev/null | wc -c)
	p=$p_end t2=$t1 last_p=$p last_t=$(now)
	deadline=$(awk -v a="$t1" -v b="$DRAIN_TIMEOUT" 'BEGIN {printf "%.3f", a + b}')
	while :; do
		if [ "$p" -ge "$acked" ]; then
			c=$(count_rows)
			[ "$c" -ge "$acked" ] && break
		fi
		sleep 0.2
		p=$(progress)
		tn=$(now)
		if [ "$p" != "$last_p" ]; then
			last_p=$p last_t=$tn t2=$tn
		elif awk -v a="$tn" -v b="$last_t" 'BEGIN {exit !(a - b > 5)}'; then
			break # no progress for 5 s: what is missing is not coming
		fi
		awk -v a="$tn" -v b="$deadline" 'BEGIN {exit !(a > b)}' && break
	done
	[ "$p" = "$p_end" ] && t2=$t1
	# the broker idle: at most 1 tick in each of 3 polls of 0.2 s, at most 10 s
	wait_quiet "ticks $BROKER_PID" 10 1
	local dcpu2 threads hwm chk rows distinct holes
	dcpu2=$(db_cpu)
	threads=$(thread_cpu "$BROKER_PID")
	hwm=$(hwm_mb "$BROKER_PID")
	local bcpu_total
	bcpu_total=$(sub "$(cpu_s "$BROKER_PID")" "$cpu0")
	stop_keepmq
	sleep 0.5 # PostgreSQL backends flush their statistics when they end
	local com1 ncommit rpc
	com1=$(commits)
	ncommit=$((com1 - com0))
	chk=$(check_rows)
	local idmax
	idmax=$(progress)
	read -r rows distinct holes <<<"${chk:--1 -1 -1}"
	rpc=$(awk -v r="$rows" -v n="$ncommit" 'BEGIN {if (n > 0) printf "%.1f", r / n}')
	local backlog drain prate dcpu_all dpct
	backlog=$((acked - p_end))
	[ "$backlog" -lt 0 ] && backlog=0
	drain=$(sub "$t2" "$t1")
	prate=$(awk -v n="$rows" -v a="$t2" -v b="$t0" 'BEGIN {printf "%.1f", n / (a - b)}')
	dcpu_all=$(sub "$dcpu2" "$dcpu0")
	# the server's share of a core from the load start to the last row stored
	dpct=$(awk -v c="$(sub "$dcpu2" "$dcpu0")" -v a="$t2" -v b="$t0" 'BEGIN {printf "%.0f", 100 * c / (a - b)}')
	add_val "$key" persisted_rate "$prate"
	add_val "$key" backlog "$backlog"
	add_val "$key" drain_s "$drain"
	add_val "$key" hwm_mb "$hwm"
	add_val "$key" db_pct "$dpct"
	add_val "$key" db_pct_load "$(awk -v c="$(sub "$dcpu1" "$dcpu0")" -v t="$el" 'BEGIN {printf "%.0f", 100 * c / t}')"
	add_val "$key" db_us_per_row "$(awk -v c="$dcpu_all" -v n="$rows" 'BEGIN {if (n > 0) printf "%.2f", 1e6 * c / n}')"
	add_val "$key" broker_us_per_row "$(awk -v c="$bcpu_total" -v n="$rows" 'BEGIN {if (n > 0) printf "%.2f", 1e6 * c / n}')"
	add_val "$key" rows_per_commit "$rpc"
	local verdict="= acked"
	if [ "$rows" -ge "$acked" ] 2>/dev/null; then
		add_val "$key" rows_ok 1
		[ "$rows" -gt "$acked" ] && verdict="$((rows - acked)) more than acked (published $published)"
	else
		add_note "$key" MISSING
		verdict="MISSING $((acked - rows)) of $acked"
	fi
	[ "$distinct" != "$rows" ] && { add_note "$key" DUP; verdict="$verdict; DUPLICATES $((rows - distinct))"; }
	[ "$holes" != 0 ] && { add_note "$key" HOLES; verdict="$verdict; HOLES $holes"; }
	local logl
	logl=$(grep -cv '^\s*$' "$dir/keepmq.log")
	[ "$logl" != 0 ] && add_note "$key" log
	summary="$summary, $DB server $(awk -v c="$(sub "$dcpu1" "$dcpu0")" -v t="$el" 'BEGIN {printf "%.0f", 100 * c / t}')% of a core; max(id) when the load ended: $p_end; rows after $(fmt "$drain") s: $rows ($verdict; distinct publisher/sequence $distinct, holes $holes; max(id) $idmax); spill files when the load ended: $((spill / 1048576)) MiB; persisted $(fmt "$prate") msg/s over $(sub "$t2" "$t0") s; server CPU $dcpu_all s ($dpct% of a core over that time, $(awk -v c="$dcpu_all" -v n="$rows" 'BEGIN {if (n > 0) printf "%.2f", 1e6 * c / n}') µs per row); commits $ncommit ($rpc rows per commit); broker peak RSS $hwm MiB; broker CPU $bcpu_total s ($(awk -v c="$bcpu_total" -v n="$rows" 'BEGIN {if (n > 0) printf "%.2f", 1e6 * c / n}') µs per row); thread CPU s (creation order: main, $(pool_size "$row") pool connections, I/O workers): $threads"
	[ "$logl" != 0 ] && summary="$summary; broker log ($logl lines): $(head -3 "$dir/keepmq.log" | cut -c1-240 | tr '\n' ' ' | sed 's/|/\\|/g')"
	runlog "$row" "$rep" "$summary"
}

# ------------------------------------------------------------------ limit
PAYLOAD_HEX=$(head -c "$PAYLOAD" /dev/zero | tr '\0' 'p' | od -An -v -tx1 | tr -d ' \n')
ARRIVED="2026-12-02 08:00:00"
PGBENCH_SQL=$TMP/pgbench-limit.sql
make_pgbench_sql() { # 64 rows per INSERT, msgids from the sequence lim_id
	[ -s "$PGBENCH_SQL" ] && return
	{
		echo "\\set p random(0, $((PUBLISHERS - 1)))"
		echo "BEGIN;"
		echo "INSERT INTO mqtt_msg (msgid, topic, sender, node, qos, retain, payload, arrived) VALUES"
		local r
		for r in $(seq 1 64); do
			printf "(lpad(to_hex(nextval('lim_id')), 16, '0') || lpad(to_hex(:client_id::bigint), 16, '0'), 'bench/' || :p::text, '%s-p' || :p::text, 'keepmq@127.0.0.1', 1, 0, '\\\\x%s'::bytea, '%s')%s\n" \
				"$PREFIX" "$PAYLOAD_HEX" "$ARRIVED" "$([ "$r" -lt 64 ] && echo ,)"
		done
		echo "ON CONFLICT DO NOTHING;"
		echo "COMMIT;"
	} >"$PGBENCH_SQL"
}

limit_one() { # rep name cmd... : runs on a fresh database with the tables
	local rep=$1 name=$2
	shift 2
	fresh_db && create_tables || { add_note "$DB:limit" db-failed; runlog "limit" "$rep" "$name: fresh database failed"; return 1; }
	if [ "$DB" = pgsql ]; then
		local ms
		ms=$(($(date +%s%3N) << 16))
		pg_admin -d mqtt -c "CREATE SEQUENCE lim_id START WITH $ms CACHE 64; GRANT ALL ON SEQUENCE lim_id TO $USER_NAME" >/dev/null
	fi
	db_quiet
	gate "$DB:$name"
	local c0 c1 t0 t1 out rc mj0 mj1 TIMEFORMAT='%U %S'
	c0=$(db_cpu) mj0=$(machine_jiffies) t0=$(now)
	{ time { out=$("$@" 2>&1); rc=$?; }; } 2>"$TMP/time.txt"
	t1=$(now) mj1=$(machine_jiffies) c1=$(db_cpu)
	LIM_OUT=$out LIM_RC=$rc
	LIM_CLIENT=$(awk '{printf "%.2f", $1 + $2}' "$TMP/time.txt")
	LIM_EL=$(sub "$t1" "$t0")
	LIM_DPCT=$(awk -v a="$c1" -v b="$c0" -v t="$LIM_EL" 'BEGIN {printf "%.0f", 100 * (a - b) / t}')
	LIM_DCPU=$(sub "$c1" "$c0")
	LIM_COUNT=$(count_rows)
	LIM_OTHERS=$(others_pct "$mj0" "$mj1" "$(awk -v a="$LIM_DCPU" -v b="$LIM_CLIENT" 'BEGIN {print a + b}')" "$LIM_EL")
}

record_limit() { # rep name rows_per_s rows detail
	local rep=$1 name=$2 rps=$3 rows=$4 detail=$5
	if [ -z "$rps" ] || [ "$LIM_RC" != 0 ]; then
		add_note "$DB:$name" failed
		runlog "$name" "$rep" "failed (exit $LIM_RC): $(echo "$LIM_OUT" | tail -3 | tr '\n' ' ' | cut -c1-300)"
		return
	fi
	[ "$rows" != "$LIM_COUNT" ] && { add_note "$DB:$name" count-mismatch; detail="$detail; COUNT MISMATCH: reported $rows, table has $LIM_COUNT"; }
	add_val "$DB:$name" rows_per_s "$rps"
	add_val "$DB:$name" db_pct "$LIM_DPCT"
	add_val "$DB:$name" others_pct "${LIM_OTHERS% *}"
	add_val "$DB:$name" client_pct "$(awk -v c="$LIM_CLIENT" -v t="$LIM_EL" 'BEGIN {printf "%.0f", 100 * c / t}')"
	add_val "$DB:$name" db_us_per_row "$(awk -v c="$LIM_DCPU" -v n="$rows" 'BEGIN {if (n > 0) printf "%.2f", 1e6 * c / n}')"
	runlog "$name" "$rep" "$(fmt "$rps") rows/s ($rows rows in the table; $DB server $LIM_DPCT% of a core, $(awk -v c="$LIM_DCPU" -v n="$rows" 'BEGIN {if (n > 0) printf "%.2f", 1e6 * c / n}') µs CPU per row; the client $LIM_CLIENT CPU-s over $LIM_EL s; everything else on the machine ${LIM_OTHERS% *}% of a core, steal ${LIM_OTHERS#* }%; before: $GATE)$detail"
	# the best multi-row INSERT measurement of this round is its limit
	if [[ $name =~ ^(limit|pgbench)-c[0-9]+$ ]]; then
		local b=${BEST[$rep]:-0}
		BEST[$rep]=$(awk -v a="$b" -v r="$rps" 'BEGIN {print (r > a ? r : a)}')
		[ "$b" = "${BEST[$rep]}" ] || BEST_NAME[$rep]=$name
	fi
}
declare -A BEST BEST_NAME

run_limit() { # rep
	local rep=$1 c j out rps rows nr name
	for c in $LIMIT_CONNS; do
		for nr in $LIMIT_ROWS; do
			name=limit-c$c
			[ "$nr" != 64 ] && name=limit-c$c-r$nr
			limit_one "$rep" "$name" "$SQL_LIMIT" --db "$DB" --port "$DBPORT" --user "$USER_NAME" \
				--password "$USER_PW" --database mqtt --conns "$c" --seconds "$LIMIT_SECONDS" --rows "$nr" \
				--publishers "$PUBLISHERS" --payload "$PAYLOAD" --prefix "$PREFIX" || continue
			out=$(echo "$LIM_OUT" | grep '^{' | tail -1)
			rps=$(echo "$out" | sed -n 's/.*"rows_per_s":\([0-9.]*\).*/\1/p')
			rows=$(echo "$out" | sed -n 's/.*"rows":\([0-9]*\).*/\1/p')
			record_limit "$rep" "$name" "$rps" "$rows" "; $(echo "$out" | sed -n 's/.*"txns":\([0-9]*\).*/\1/p') transactions in $(echo "$out" | sed -n 's/.*"seconds":\([0-9.]*\).*/\1/p') s"
		done
	done
	[ "$DB" = pgsql ] || return
	make_pgbench_sql
	for c in $PGBENCH_CONNS; do
		j=$((c < 2 ? c : 2))
		limit_one "$rep" "pgbench-c$c" env PGPASSWORD="$USER_PW" pgbench -n -M prepared -f "$PGBENCH_SQL" \
			-c "$c" -j "$j" -T "$LIMIT_SECONDS" -h 127.0.0.1 -p "$DBPORT" -U "$USER_NAME" mqtt || continue
		local tps tx
		tps=$(echo "$LIM_OUT" | sed -n 's/^tps = \([0-9.]*\) (without initial connection time).*/\1/p')
		tx=$(echo "$LIM_OUT" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p')
		rps=$(awk -v t="$tps" 'BEGIN {if (t != "") printf "%.1f", t * 64}')
		record_limit "$rep" "pgbench-c$c" "$rps" "$((${tx:-0} * 64))" "; $tx transactions, $(fmt "$tps") tps; $(echo "$LIM_OUT" | grep -E '^latency average' | head -1)"
	done
}

BULK_CSV=""
make_bulk_csv() { # the same rows as the limit's, publisher runs of 64
	[ -n "$BULK_CSV" ] && [ -s "$BULK_CSV" ] && return
	BULK_CSV=$TMP/bulk.csv
	log "writing $BULK_ROWS rows to $BULK_CSV"
	LC_ALL=C awk -v n="$BULK_ROWS" -v pubs="$PUBLISHERS" -v prefix="$PREFIX" -v at="$ARRIVED" -v len="$PAYLOAD" '
		BEGIN {
			pl = sprintf("%*s", len, ""); gsub(/ /, "p", pl)
			for (i = 0; i < n; i++) {
				p = int(i / 64) % pubs
				printf "01a234d1%08xa5a5b6b6c7c7%04x,bench/%d,%s-p%d,keepmq@127.0.0.1,1,0,%s,%s\n", i, p, p, prefix, p, pl, at
			}
		}' >"$BULK_CSV"
	chmod 644 "$BULK_CSV"
}

run_bulk() { # rep
	local rep=$1 f
	make_bulk_csv
	f=$DBDIR/bulk.csv
	cp "$BULK_CSV" "$f" # the server reads it (MariaDB: secure_file_priv is its directory)
	chmod 644 "$f"
	cat "$f" >/dev/null
	if [ "$DB" = mysql ]; then
		limit_one "$rep" bulk my_admin mqtt -e "LOAD DATA INFILE '$f' INTO TABLE mqtt_msg
			FIELDS TERMINATED BY ',' (msgid, topic, sender, node, qos, retain, payload, arrived)" || return
	else
		limit_one "$rep" bulk pg_admin -d mqtt -c "COPY mqtt_msg (msgid, topic, sender, node, qos, retain, payload, arrived)
			FROM '$f' WITH (FORMAT csv)" || return
	fi
	local rps
	rps=$(awk -v n="$BULK_ROWS" -v t="$LIM_EL" 'BEGIN {if (t > 0) printf "%.1f", n / t}')
	record_limit "$rep" bulk "$rps" "$BULK_ROWS" "; $BULK_ROWS rows in $LIM_EL s, one statement"
	rm -f "$f"
}

# -------------------------------------------------------------------- run
START_TS=$(date -u +%Y-%m-%dT%H:%M:%SZ)
START_S=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A SETTINGS VERSION LOADS LIMIT_NAMES
for db in $DBS; do
	LOADS[$db]="before: $(cut -d' ' -f1-3 /proc/loadavg)"
	log "starting $db ($DURABILITY durability)"
	if ! db_start "$db"; then
		log "$db did not start; skipped"
		db_stop
		continue
	fi
	SETTINGS[$db]=$(server_settings)
	VERSION[$db]=$(db_version)
	log "$db: ${SETTINGS[$db]}"
	BEST=() BEST_NAME=()
	for rep in $(seq 1 "$REPEAT"); do
		LOADS[$db]="${LOADS[$db]}; round $rep: $(cut -d' ' -f1-3 /proc/loadavg)"
		for row in "${ROWS[@]}"; do
			case $row in
			limit) run_limit "$rep" ;;
			bulk) run_bulk "$rep" ;;
			*) run_keepmq "$row" "$rep" ;;
			esac
		done
		[ -n "${BEST[$rep]:-}" ] && { add_val "$db:limit" rows_per_s "${BEST[$rep]}"; LIMIT_NAMES[$db]="${LIMIT_NAMES[$db]:-} ${BEST_NAME[$rep]:-?}"; }
	done
	LOADS[$db]="${LOADS[$db]}; after: $(cut -d' ' -f1-3 /proc/loadavg)"
	db_stop
done
ELAPSED=$(($(date +%s) - START_S))

# ---------------------------------------------------------------- report
has() { [[ " ${ROWS[*]} " == *" $1 "* ]]; }
# the rows once each, in order (a row given twice in --rows ran twice per round)
UROWS=()
for r in "${ROWS[@]}"; do [[ " ${UROWS[*]} " == *" $r "* ]] || UROWS+=("$r"); done
with_note() { # value key
	local v
	v=$(fmt "$1")
	[ -n "${NOTE[$2]:-}" ] && v="$v (${NOTE[$2]# })"
	echo "$v"
}
verdict() { # ratio threshold
	[ -z "$1" ] && { echo "not measured"; return; }
	[ "$RATE" != 0 ] && { echo "fixed offered load: the target applies to saturation"; return; }
	awk -v r="$1" -v t="$2" 'BEGIN {print ((r >= t) ? "**met**" : "**missed**")}'
}
describe() { # row
	case $1 in
	none) echo "keepmq, no backend" ;;
	*) echo "on_message_publish, delivery_mode = $(mode_of "$1"), pool_size $(pool_size "$1"), batch_size $(batch_size "$1")" ;;
	esac
}
dbname() { [ "$1" = mysql ] && echo "MariaDB" || echo "PostgreSQL"; }

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUTDIR"
MD=$OUTDIR/sqlserver-$STAMP.md
{
	echo "# keepmq persisted QoS 1 publishing (MariaDB, PostgreSQL) — $START_TS"
	echo
	echo "Durability: **$DURABILITY** ($([ "$DURABILITY" = strict ] && echo "the servers' production defaults: innodb_flush_log_at_trx_commit = 1; fsync = on, synchronous_commit = on" || echo "innodb_flush_log_at_trx_commit = 2; synchronous_commit = off (fsync stays on)"))."
	echo "Each cell is the median of $REPEAT round(s); runs alternate between the rows, each on a fresh"
	echo "database mqtt of one server per database. keepmq rows: QoS 1, $PUBLISHERS publishers → 1 subscriber"
	echo "(bench/#), $PAYLOAD-byte payloads, $WINDOW unacknowledged PUBLISHes per publisher, offered load:"
	echo "$([ "$RATE" = 0 ] && echo "as much as flow control allows" || echo "$RATE msg/s in total"). msg/s acked = PUBLISHes acknowledged per second in the measured"
	echo "window. Persisted msg/s = rows in mqtt_msg / (load start → the last insert). Server CPU = the"
	echo "database server's CPU over that time (% of one core) and per row; broker µs/row = the broker's"
	echo "CPU from the load start until it was idle, per row. Others = the CPU everything else on the"
	echo "machine used during the load (machine busy − broker − server − load generator / client), % of a"
	echo "core: the other users of the shared machine. Every measurement started once the whole machine"
	echo "had used at most $QUIET_MAX% of a core for a second (at most $QUIET_WAIT s of waiting; else flagged busy-machine)."
	for db in $DBS; do
		[ -n "${SETTINGS[$db]:-}" ] || continue
		DB=$db
		echo
		echo "## $(dbname "$db")"
		echo
		echo "${VERSION[$db]}; ${SETTINGS[$db]}"
		echo
		echo "| Row | What | msg/s acked | Persisted msg/s | Backlog when the load stopped | Drain s | stored = acked | Rows per commit | Broker CPU % | Broker µs/row | Server CPU % | Server µs/row | Others % |"
		echo "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
		for r in "${UROWS[@]}"; do
			k="$db:$r"
			case $r in
			none) echo "| none | $(describe none) | $(with_note "$(cell "$k" pub_rate)" "$k") | – | – | – | – | – | $(fmti "$(cell "$k" cpu_pct)") | – | – | – | $(fmti "$(cell "$k" others_pct)") |" ;;
			limit | bulk) ;;
			*) echo "| $r | $(describe "$r") | $(with_note "$(cell "$k" pub_rate)" "$k") | $(fmt "$(cell "$k" persisted_rate)") | $(fmti "$(cell "$k" backlog)") | $(fmt "$(cell "$k" drain_s)") | $(nvals "$k" rows_ok)/$(nvals "$k" pub_rate) runs | $(fmt "$(cell "$k" rows_per_commit)") | $(fmti "$(cell "$k" cpu_pct)") | $(fmt "$(cell "$k" broker_us_per_row)") | $(fmti "$(cell "$k" db_pct)") | $(fmt "$(cell "$k" db_us_per_row)") | $(fmti "$(cell "$k" others_pct)") |" ;;
			esac
		done
		if has limit || has bulk; then
			echo
			echo "| Limit measurement | rows/s | Server CPU % | Server µs/row | Client CPU % | Others % |"
			echo "|---|---:|---:|---:|---:|---:|"
			for c in $LIMIT_CONNS; do
				has limit || break
				for nr in $LIMIT_ROWS; do
				[ "$nr" = 64 ] && continue
				k="$db:limit-c$c-r$nr"
				echo "| keepmq-sql-limit, $c connection(s), $nr-row prepared INSERT per transaction (not part of the limit) | $(with_note "$(cell "$k" rows_per_s)" "$k") | $(fmti "$(cell "$k" db_pct)") | $(fmt "$(cell "$k" db_us_per_row)") | $(fmti "$(cell "$k" client_pct)") | $(fmti "$(cell "$k" others_pct)") |"
				done
				[[ " $LIMIT_ROWS " == *" 64 "* ]] || continue
				k="$db:limit-c$c"
				echo "| keepmq-sql-limit, $c connection(s), 64-row prepared INSERT per transaction | $(with_note "$(cell "$k" rows_per_s)" "$k") | $(fmti "$(cell "$k" db_pct)") | $(fmt "$(cell "$k" db_us_per_row)") | $(fmti "$(cell "$k" client_pct)") | $(fmti "$(cell "$k" others_pct)") |"
			done
			if [ "$db" = pgsql ] && has limit; then
				for c in $PGBENCH_CONNS; do
					k="$db:pgbench-c$c"
					echo "| pgbench -M prepared -c $c, BEGIN; 64-row INSERT; COMMIT | $(with_note "$(cell "$k" rows_per_s)" "$k") | $(fmti "$(cell "$k" db_pct)") | $(fmt "$(cell "$k" db_us_per_row)") | $(fmti "$(cell "$k" client_pct)") | $(fmti "$(cell "$k" others_pct)") |"
				done
			fi
			has limit && echo "| **limit** = the best of the above in each round (best:${LIMIT_NAMES[$db]:-}) | **$(fmt "$(cell "$db:limit" rows_per_s)")** | | | | |"
			has bulk && echo "| bulk: $([ "$db" = mysql ] && echo "LOAD DATA INFILE" || echo "COPY FROM file"), $BULK_ROWS rows, one statement | $(with_note "$(cell "$db:bulk" rows_per_s)" "$db:bulk") | $(fmti "$(cell "$db:bulk" db_pct)") | $(fmt "$(cell "$db:bulk" db_us_per_row)") | $(fmti "$(cell "$db:bulk" client_pct)") | $(fmti "$(cell "$db:bulk" others_pct)") |"
		fi
		echo
		LIM=$(cell "$db:limit" rows_per_s)
		BULK=$(cell "$db:bulk" rows_per_s)
		NONE=$(cell "$db:none" pub_rate)
		echo "| Ratio | Value | Target | |"
		echo "|---|---:|---|---|"
		for r in "${UROWS[@]}"; do
			case $r in none | limit | bulk) continue ;; esac
			x=$(ratio "$(cell "$db:$r" persisted_rate)" "$LIM")
			if [ "$r" = async ]; then
				echo "| async persisted / limit | ${x:-n/a} | ≥ 0.50 | $(verdict "$x" 0.50) |"
			else
				echo "| $r persisted / limit | ${x:-n/a} | – | |"
			fi
		done
		for r in "${UROWS[@]}"; do
			case $r in none | limit | bulk) continue ;; esac
			x=$(ratio "$(cell "$db:$r" persisted_rate)" "$BULK")
			[ -n "$x" ] && echo "| $r persisted / bulk | $x | – | |"
		done
		for r in "${UROWS[@]}"; do
			case $r in none | limit | bulk) continue ;; esac
			x=$(ratio "$(cell "$db:$r" pub_rate)" "$NONE")
			[ -n "$x" ] && echo "| $r acked / none | $x | – | |"
		done
		echo
		echo "Load average: ${LOADS[$db]}."
	done
	echo
	echo "## Machine"
	echo
	machine_lines
	keepmq_line "$ROOT"
	echo "- Load average before the run: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg); wall time ${ELAPSED}s"
	echo
	echo "## Commands"
	echo
	echo "- Invocation: \`bench/sqlserver.sh${ORIG_ARGS[*]:+ ${ORIG_ARGS[*]}}\`"
	echo "- MariaDB: \`mariadb-install-db --no-defaults --datadir=\$D --user=root --auth-root-authentication-method=socket --skip-test-db\`, then"
	echo "  \`mariadbd --no-defaults --user=root --datadir=\$D --socket=\$S --port=\$P --bind-address=127.0.0.1 --skip-name-resolve --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=$([ "$DURABILITY" = strict ] && echo 1 || echo 2) --max-connections=200 --secure-file-priv=\$DIR\`;"
	echo "  \`CREATE USER 'keepmq'@'127.0.0.1' IDENTIFIED BY '…'; GRANT ALL PRIVILEGES ON mqtt.* TO 'keepmq'@'127.0.0.1'\`"
	echo "- PostgreSQL: \`runuser -u postgres -- initdb -D \$D -U postgres -A trust -E UTF8 --locale=C.UTF-8\`, pg_hba.conf \`local all all trust\` + \`host all all 127.0.0.1/32 scram-sha-256\`,"
	echo "  \`pg_ctl -w -o \"-p \$P -k \$DIR -c listen_addresses=127.0.0.1 -c shared_buffers=256MB -c fsync=on -c synchronous_commit=$([ "$DURABILITY" = strict ] && echo on || echo off) -c max_connections=200\" start\`;"
	echo "  \`CREATE ROLE keepmq LOGIN PASSWORD '…'\`, per run \`CREATE DATABASE mqtt OWNER keepmq\`"
	echo "- keepmq rows: \`keepmq -c keepmq.conf\`, then \`keepmq-loadgen ${LG_ARGS[*]} --port \$PORT --json\`; keepmq.conf (async; sync: \`delivery_mode = sync\`; none: the first two lines):"
	echo
	echo '```'
	for db in $DBS; do
		DB=$db
		d=$(mktemp -d "$TMP/conf.XXXX")
		write_conf async '$PORT' '$DBPORT' "$d" | xargs cat
	done
	echo '```'
	echo
	echo "- limit (keepmq-sql-limit): \`keepmq-sql-limit --db mysql|pgsql --port \$P --user keepmq --password … --database mqtt --conns C --seconds $LIMIT_SECONDS --rows 64 --publishers $PUBLISHERS --payload $PAYLOAD --prefix $PREFIX\` (bench/sql_limit.c)"
	echo "- limit (pgbench): \`CREATE SEQUENCE lim_id START WITH <ms << 16> CACHE 64\`, then \`pgbench -n -M prepared -f limit.sql -c C -j min(C,2) -T $LIMIT_SECONDS -h 127.0.0.1 -p \$P -U keepmq mqtt\`, rows/s = tps × 64; limit.sql (64 rows, two shown):"
	echo
	echo '```'
	make_pgbench_sql
	sed -n '1,5p' "$PGBENCH_SQL"
	echo "..."
	tail -3 "$PGBENCH_SQL"
	echo '```'
	echo
	echo "- bulk: a CSV of $BULK_ROWS rows \`01a234d1<i as 8 hex>a5a5b6b6c7c7<p as 4 hex>,bench/<p>,$PREFIX-p<p>,keepmq@127.0.0.1,1,0,<$PAYLOAD × p>,$ARRIVED\` (p = ⌊i / 64⌋ mod $PUBLISHERS),"
	echo "  read by the server: \`LOAD DATA INFILE '\$F' INTO TABLE mqtt_msg FIELDS TERMINATED BY ',' (msgid, topic, sender, node, qos, retain, payload, arrived)\` (root over the socket) /"
	echo "  \`COPY mqtt_msg (msgid, topic, sender, node, qos, retain, payload, arrived) FROM '\$F' WITH (FORMAT csv)\` (postgres over the socket); rows / elapsed time of the client."
	echo
	echo "## Every run"
	echo
	echo "| DB | Row | # | Result |"
	echo "|---|---|---:|---|"
	while IFS=$'\t' read -r db row rep summary; do
		echo "| $db | $row | $rep | $summary |"
	done <"$RUNLOG"
} >"$MD"
DB=""

cat "$MD"
log "results written to $MD"
