#!/usr/bin/env bash
# persist.sh - QoS 1 publishing persisted into SQLite by on_message_publish:
# keepmq with no backend, with the SQLite backend in async and in sync
# delivery mode, and SQLite's own insert rate on this machine.
#
# Design
# ------
# Rows (each run is fresh: its own temp directory, config, free port and a
# new database file):
#   none      keepmq, no backend
#   async     keepmq + backend.sqlite, delivery_mode = async, the one rule
#             backend.sqlite.hook.message.publish.1 = on_message_publish
#   async-mem the same with backend.sqlite.pool1.spill_dir = "" (no spill
#             file: what the database cannot take yet waits in memory only)
#   sync      the same with delivery_mode = sync (PUBACK after the commit)
#   limit100  keepmq-sqlite-limit (bench/sqlite_limit.c): the same INSERT
#             into the same mqtt_msg table, same pragmas, 100 rows per
#             transaction, nothing else running: SQLite's grouped limit.
#             Rows come in runs of --window (64) per publisher, as the
#             publishers' bursts reach the broker (the order matters: each
#             transaction dirties one index leaf per distinct topic and
#             sender in it)
#   limit100-rr  the same with publishers strictly round robin (10 topics
#             in every transaction: the least favourable order)
#   limit1    1 row per transaction
# Runs alternate none, async, async-mem, sync, limit100, limit100-rr, limit1, none, ... --repeat
# times, so drift of the shared machine hits every row alike; each cell is
# the median of the repeats.
#
# The broker's own state store (--state): the same load, but the subscriber
# is a persistent session (keepmq-loadgen --sub-session persistent: MQTT
# 3.1.1 clean session 0), so with a state store every delivery is written
# (keepmq_msg + keepmq_queue) and deleted again when the subscriber's PUBACK
# comes; no backend rule. Rows:
#   st-none   persistent subscriber online, state.store = none (baseline)
#   st-async  state.store = sqlite, state.delivery_mode = async
#   st-sync   the same, delivery_mode = sync (PUBACK after the commit)
#   off-none, off-async, off-sync  the same three with the subscriber's
#             session offline (--sub-session offline: it subscribes and
#             disconnects before the publishers start), so every message
#             queues for it and stays stored; mqtt.max_mqueue_len =
#             10000000 so the session queue drops nothing
# --state runs these and limit100 (for context); --only picks from every
# row of both sets. After a stored run the driver waits until the broker
# is idle (its CPU time stops moving: the writer thread has nothing left),
# then counts keepmq_queue and keepmq_msg (sqlite3 -readonly): online they
# must be empty, offline both must equal the PUBACKs received; after
# SIGTERM it counts again. A run that misses is flagged (NOT-EMPTY,
# MISSING); a "state.queue_limit" error in the broker log flags DROPPED.
# The stored rate is acked messages (offline: keepmq_queue rows) / (load
# start -> broker idle).
#
# Load (keepmq rows): keepmq-loadgen pubsub, QoS 1, 10 publishers -> 1
# subscriber on bench/# (fan-in; the generator needs at least one
# subscriber), 64-byte payloads, at most --window (64) unacknowledged
# PUBLISHes per publisher, i.e. 640 in flight: in sync mode the pool thread
# always finds a full batch (100) queued, from many clients. The end-to-end
# backlog is --max-backlog 64 per publisher (640 messages), below keepmq's
# default session queue (mqtt.max_mqueue_len = 1000), so the subscriber
# loses nothing; the generator's default (1024 / 10 = 102 per publisher)
# would overflow that queue and drop QoS 1 messages (drop_oldest).
# Throughput is PUBLISHes sent in the measured window per second; the
# window bounds the unacknowledged ones, so it is the acknowledged rate.
#
# After each persisted run the database is polled (keepmq-sqlite-limit
# --count, read-only) until SELECT count(*) FROM mqtt_msg equals the number
# of PUBACKs the generator received: at once in sync mode; in async mode
# once the queue has drained. A run whose count does not reach it is
# flagged (MISSING). The persisted rate is rows / (time from the start of
# the load generator until the last row was committed).
#
# Needs bash, coreutils, awk, ss (iproute2); the state rows also the sqlite3
# command-line shell. Writes bench/results/persist-<UTC time>.md (with
# --state: state-<UTC time>.md) and prints it.
#
# Usage: bench/persist.sh [--quick] [--repeat R] [--duration S] [--warmup S]
#                         [--state] [--only REGEX] [--window N] [--rate R]
#                         [--no-build] [--keep]
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
KEEPMQ_BIN=${KEEPMQ_BIN:-$BUILD_DIR/keepmq}
LOADGEN=${LOADGEN:-$BUILD_DIR/keepmq-loadgen}
SQLITE_LIMIT=${SQLITE_LIMIT:-$BUILD_DIR/keepmq-sqlite-limit}
OUTDIR=$ROOT/bench/results
REPEAT=3
QUICK=0
ONLY=""
DURATION=""
WARMUP=""
PUBLISHERS=10
PAYLOAD=64
WINDOW=64
MAX_BACKLOG=64
RATE=0
DRAIN_TIMEOUT=120
BUILD=1
KEEP=0
STATE=0
OFFLINE_MQUEUE=10000000
ORIG_ARGS=("$@")

usage() {
	sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	cat <<'EOF'
Options:
  --quick          short runs (warm-up 0.5 s, 2 s measured), one repeat
  --repeat R       runs per row, median reported (3; quick: 1)
  --duration S     measured seconds per keepmq run (5; quick: 2); the SQLite
                   limit runs warm-up + duration seconds
  --warmup S       warm-up seconds (1; quick: 0.5)
  --state          the state store rows (st-none|st-async|st-sync|off-none|
                   off-async|off-sync) and limit100, instead of the backend rows
  --only REGEX     rows to run, from both sets (none|async|async-mem|sync|
                   limit100|limit100-rr|limit1|st-none|st-async|st-sync|
                   off-none|off-async|off-sync)
  --window N       unacknowledged PUBLISHes per publisher (64)
  --rate R         offer R msg/s in total instead of as many as flow control
                   allows (0 = saturate): with R below SQLite's limit this
                   compares the rows at the same load (CPU, latency, backlog)
  --publishers P   publishers (10)
  --drain-timeout S  longest wait for an async queue to drain (120)
  --no-build       do not (re)build keepmq, keepmq-loadgen, keepmq-sqlite-limit
  --keep           keep the temp directory (configs, databases, JSON)
Environment: BUILD_DIR (build-bench), KEEPMQ_BIN, LOADGEN, SQLITE_LIMIT.
EOF
}

while [ $# -gt 0 ]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--repeat) REPEAT=$2; shift ;;
	--duration) DURATION=$2; shift ;;
	--warmup) WARMUP=$2; shift ;;
	--only) ONLY=$2; shift ;;
	--state) STATE=1 ;;
	--window) WINDOW=$2; shift ;;
	--rate) RATE=$2; shift ;;
	--publishers) PUBLISHERS=$2; shift ;;
	--drain-timeout) DRAIN_TIMEOUT=$2; shift ;;
	--no-build) BUILD=0 ;;
	--keep) KEEP=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "persist.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

if [ "$QUICK" = 1 ]; then
	: "${DURATION:=2}" "${WARMUP:=0.5}"
	[[ " ${ORIG_ARGS[*]} " == *" --repeat "* ]] || REPEAT=1
else
	: "${DURATION:=5}" "${WARMUP:=1}"
fi
LIMIT_SECONDS=$(awk -v a="$WARMUP" -v b="$DURATION" 'BEGIN {print a + b}')

log() { echo "persist.sh: $*" >&2; }

ALL_ROWS=(none async async-mem sync limit100 limit100-rr limit1
	st-none st-async st-sync off-none off-async off-sync)
DEFAULT_ROWS=(none async async-mem sync limit100 limit100-rr limit1)
[ "$STATE" = 1 ] && DEFAULT_ROWS=(st-none st-async st-sync off-none off-async off-sync limit100)
ROWS=()
if [ -z "$ONLY" ]; then
	ROWS=("${DEFAULT_ROWS[@]}")
else
	for r in "${ALL_ROWS[@]}"; do
		[[ $r =~ ^($ONLY)$ ]] && ROWS+=("$r")
	done
fi
[ ${#ROWS[@]} -gt 0 ] || { log "--only '$ONLY' matches no row (${ALL_ROWS[*]})"; exit 2; }

if [ "$BUILD" = 1 ]; then
	log "building keepmq, keepmq-loadgen, keepmq-sqlite-limit in $BUILD_DIR"
	if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
		cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null ||
			{ log "cmake configure failed"; exit 1; }
	fi
	cmake --build "$BUILD_DIR" -j2 --target keepmq keepmq-loadgen keepmq-sqlite-limit >/dev/null ||
		{ log "build failed"; exit 1; }
fi
for b in "$KEEPMQ_BIN" "$LOADGEN" "$SQLITE_LIMIT"; do
	[ -x "$b" ] || { log "missing $b (build it, or drop --no-build)"; exit 1; }
done
is_state_row() { case $1 in st-* | off-*) return 0 ;; esac; return 1; }
for r in "${ROWS[@]}"; do
	if is_state_row "$r" && ! command -v sqlite3 >/dev/null; then
		log "the state rows count keepmq_queue with the sqlite3 shell, which is missing"
		exit 1
	fi
done

TMP=$(mktemp -d /tmp/keepmq-persist.XXXXXX)
BROKER_PID=""
cleanup() {
	[ -n "$BROKER_PID" ] && kill -9 "$BROKER_PID" 2>/dev/null
	if [ "$KEEP" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LG_TIMEOUT=()
command -v timeout >/dev/null && LG_TIMEOUT=(timeout -k 5 600)
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a - b}'; }

is_listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# Field of a flat JSON object.
jget() { sed -n "s/.*\"$2\":\(\"[^\"]*\"\|[^,}]*\).*/\1/p" "$1" | tr -d '"'; }

# CPU seconds (user + system) of a process, or of each of its threads.
cpu_s() {
	awk -v t="$CLK_TCK" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t}' "/proc/$1/stat" 2>/dev/null
}
thread_cpu() { # pid -> "1.23 0.98 ..." busiest first
	local f
	for f in /proc/"$1"/task/*/stat; do
		awk -v t="$CLK_TCK" '{sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / t}' "$f" 2>/dev/null
	done | sort -gr | tr '\n' ' ' | sed 's/ $//'
}
# Seconds the process's threads spent runnable but waiting for a CPU.
run_delay_s() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $2} END {printf "%.2f", s / 1e9}'; }
hwm_mb() { awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null; }

write_conf() { # mode port dir -> config path
	local f=$3/keepmq.conf
	{
		echo "listener.tcp.default = 127.0.0.1:$2"
		echo "log.level = warning"
		case $1 in
		none | st-none) ;;
		st-* | off-*)
			[ "${1#off-}" != "$1" ] && echo "mqtt.max_mqueue_len = $OFFLINE_MQUEUE"
			if [ "${1#*-}" != none ]; then
				echo "state.store = sqlite"
				echo "state.file = $3/keepmq.db"
				echo "state.delivery_mode = ${1#*-}"
			fi
			;;
		*)
			echo "backend.sqlite.pool1.database = $3/keepmq.db"
			echo "backend.sqlite.delivery_mode = ${1%-mem}"
			[ "$1" = async-mem ] && echo 'backend.sqlite.pool1.spill_dir = ""'
			echo 'backend.sqlite.hook.message.publish.1 = {"topic": "#", "action": {"function": "on_message_publish"}, "pool": "pool1"}'
			;;
		esac
	} >"$f"
	echo "$f"
}

start_broker() { # mode dir -> sets PORT, BROKER_PID
	PORT=$("$LOADGEN" freeport) || return 1
	local conf
	conf=$(write_conf "$1" "$PORT" "$2")
	(cd "$2" && exec "$KEEPMQ_BIN" -c "$conf") >>"$2/keepmq.log" 2>&1 &
	BROKER_PID=$!
	local i
	for i in $(seq 1 50); do
		if ! kill -0 "$BROKER_PID" 2>/dev/null; then
			wait "$BROKER_PID" 2>/dev/null
			BROKER_PID=""
			return 1
		fi
		is_listening "$PORT" && return 0
		sleep 0.1
	done
	stop_broker
	return 1
}

stop_broker() {
	[ -z "$BROKER_PID" ] && return
	kill -TERM "$BROKER_PID" 2>/dev/null
	local i
	for i in $(seq 1 100); do
		kill -0 "$BROKER_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$BROKER_PID" 2>/dev/null
	wait "$BROKER_PID" 2>/dev/null
	BROKER_PID=""
}

count_rows() { "$SQLITE_LIMIT" --count "$1" 2>/dev/null || echo -1; }
# "queue msg" row counts of the state store's tables (read-only; WAL readers
# do not block the writer).
count_state() {
	sqlite3 -readonly -separator ' ' "$1" \
		'SELECT (SELECT count(*) FROM keepmq_queue), (SELECT count(*) FROM keepmq_msg)' 2>/dev/null ||
		echo "-1 -1"
}
ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null; }

declare -A VAL  # "row|metric" -> values of the repeats
declare -A NOTE # row -> flags
RUNLOG=$TMP/runs.tsv
: >"$RUNLOG"
add_val() { VAL["$1|$2"]="${VAL["$1|$2"]:-} $3"; }
add_note() { case " ${NOTE[$1]:-} " in *" $2 "*) ;; *) NOTE[$1]="${NOTE[$1]:-} $2" ;; esac; }
median() {
	printf '%s\n' "$@" | grep -E '^-?[0-9.]+$' | sort -g |
		awk '{v[NR] = $1} END {if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
cell() { median ${VAL["$1|$2"]:-}; } # shellcheck disable=SC2086
fmt() {
	[ -z "$1" ] && { echo "n/a"; return; }
	awk -v x="$1" 'BEGIN {if (x >= 100) printf "%.0f", x; else if (x >= 10) printf "%.1f", x; else printf "%.2f", x}'
}

LG_ARGS=(pubsub --topology fanin --publishers "$PUBLISHERS" --subscribers 1 --qos 1
	--payload "$PAYLOAD" --window "$WINDOW" --max-backlog "$MAX_BACKLOG"
	--warmup "$WARMUP" --duration "$DURATION")
[ "$RATE" != 0 ] && LG_ARGS+=(--rate "$RATE")
lg_extra() { # mode -> extra load generator options
	case $1 in
	st-*) echo "--sub-session persistent" ;;
	off-*) echo "--sub-session offline" ;;
	esac
}

# State rows, after the load: waits until the broker is idle (the writer
# has nothing left), checks keepmq_queue / keepmq_msg. Sets STATE_SUMMARY.
check_state() { # mode dir acked t0 t1 cpu0
	local mode=$1 dir=$2 acked=$3 t0=$4 t1=$5 cpu0=$6 db=$2/keepmq.db
	local want=0
	[ "${mode#off-}" != "$mode" ] && want=$acked
	local c_end q m t2=$t1 tk last_tk idle=0 deadline tn
	c_end=$(count_state "$db" | cut -d' ' -f1)
	last_tk=$(ticks "$BROKER_PID")
	deadline=$(awk -v a="$t1" -v b="$DRAIN_TIMEOUT" 'BEGIN {printf "%.3f", a + b}')
	# idle: at most 1 tick of CPU in each of 3 polls of 0.2 s
	while :; do
		sleep 0.2
		tn=$(now)
		tk=$(ticks "$BROKER_PID")
		[ -z "$tk" ] && break
		if [ $((tk - last_tk)) -le 1 ]; then
			idle=$((idle + 1))
			[ "$idle" -ge 3 ] && break
		else
			idle=0 t2=$tn
		fi
		last_tk=$tk
		awk -v a="$tn" -v b="$deadline" 'BEGIN {exit !(a > b)}' && break
	done
	read -r q m < <(count_state "$db")
	local cpu2 threads hwm
	cpu2=$(cpu_s "$BROKER_PID")
	threads=$(thread_cpu "$BROKER_PID")
	hwm=$(hwm_mb "$BROKER_PID")
	stop_broker
	local q2 m2 dropped
	read -r q2 m2 < <(count_state "$db")
	dropped=$(grep -c 'state.queue_limit' "$dir/keepmq.log")
	local drain srate
	drain=$(sub "$t2" "$t1")
	# offline: the rows actually there (fewer than acked if changes were
	# dropped); online nothing is left to count, so the acked messages
	srate=$(awk -v n="$([ "$want" = 0 ] && echo "$acked" || echo "$q")" -v a="$t2" -v b="$t0" 'BEGIN {printf "%.1f", n / (a - b)}')
	add_val "$mode" stored_rate "$srate"
	add_val "$mode" backlog "$c_end"
	add_val "$mode" drain_s "$drain"
	add_val "$mode" hwm_mb "$hwm"
	if [ "$q" = "$want" ] && [ "$m" = "$want" ] && [ "$q2" = "$want" ] && [ "$m2" = "$want" ]; then
		add_val "$mode" rows_ok 1
	elif [ "$want" = 0 ]; then
		add_note "$mode" NOT-EMPTY
	else
		add_note "$mode" MISSING
	fi
	[ "$dropped" != 0 ] && add_note "$mode" DROPPED
	STATE_SUMMARY="keepmq_queue rows when the load ended: $c_end; broker idle $(fmt "$drain") s later: keepmq_queue $q, keepmq_msg $m, after SIGTERM $q2 / $m2 (want $want); $([ "$dropped" != 0 ] && echo "broker log: state.queue_limit reached, changes DROPPED; ")stored $(fmt "$srate") msg/s over $(sub "$t2" "$t0") s; broker peak RSS $hwm MiB; thread CPU s: $threads (total $(sub "$cpu2" "$cpu0"))"
}

run_keepmq() { # mode rep
	local mode=$1 rep=$2 dir=$TMP/$1-$2
	mkdir -p "$dir"
	if ! start_broker "$mode" "$dir"; then
		add_note "$mode" start-failed
		log "$mode #$rep: keepmq did not start:"
		sed 's/^/  /' "$dir/keepmq.log" | head -5 >&2
		echo -e "$mode\t$rep\tbroker did not start" >>"$RUNLOG"
		return
	fi
	local out=$dir/loadgen.json cpu0 t0 t1 cpu1 rc
	sleep 0.3 # let the pool thread open the database
	local rd0 rd1
	cpu0=$(cpu_s "$BROKER_PID")
	rd0=$(run_delay_s "$BROKER_PID")
	t0=$(now)
	# shellcheck disable=SC2046
	"${LG_TIMEOUT[@]}" "$LOADGEN" "${LG_ARGS[@]}" $(lg_extra "$mode") --port "$PORT" --json >"$out" 2>"$dir/loadgen.err"
	rc=$?
	t1=$(now)
	cpu1=$(cpu_s "$BROKER_PID")
	rd1=$(run_delay_s "$BROKER_PID")
	if [ ! -s "$out" ]; then
		add_note "$mode" failed
		echo -e "$mode\t$rep\tload generator failed (exit $rc): $(head -c 200 "$dir/loadgen.err")" >>"$RUNLOG"
		log "$mode #$rep: load generator failed (exit $rc)"
		stop_broker
		return
	fi
	local k pub recv acked published lost dup errs
	pub=$(jget "$out" pub_rate) recv=$(jget "$out" recv_rate) acked=$(jget "$out" acked)
	published=$(jget "$out" published) lost=$(jget "$out" lost) dup=$(jget "$out" dup)
	errs=$(jget "$out" errors)
	for k in pub_rate recv_rate lat_p50_us lat_p99_us; do add_val "$mode" "$k" "$(jget "$out" "$k")"; done
	[ "$rc" != 0 ] && add_note "$mode" "exit-$rc"
	[ "${lost:-0}" != 0 ] && add_note "$mode" LOSS
	[ "${dup:-0}" != 0 ] && add_note "$mode" DUP
	[ "${errs:-0}" != 0 ] && add_note "$mode" errors
	[ "$acked" != "$published" ] && add_note "$mode" unacked
	local cpu_pct
	cpu_pct=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$(sub "$t1" "$t0")" 'BEGIN {printf "%.0f", (t > 0 ? 100 * (b - a) / t : 0)}')
	add_val "$mode" cpu_pct "$cpu_pct"
	add_val "$mode" cpu_wait "$(sub "$rd1" "$rd0")"
	add_val "$mode" acked "$acked"
	local summary
	summary="$(fmt "$pub") msg/s acked ($(fmt "$recv") received), p50 $(fmt "$(jget "$out" lat_p50_us)") µs, p99 $(fmt "$(jget "$out" lat_p99_us)") µs, published $published, acked $acked, lost $lost, dup $dup, errors $errs; broker CPU ${cpu_pct}% of one core during the load, its threads waited $(sub "$rd1" "$rd0") s for a CPU"

	if is_state_row "$mode" && [ "${mode#*-}" != none ]; then
		check_state "$mode" "$dir" "$acked" "$t0" "$t1" "$cpu0"
		summary="$summary; $STATE_SUMMARY"
	elif [ "$mode" != none ] && ! is_state_row "$mode"; then
		# The rows: at once (sync), or once the queue has drained (async).
		local db=$dir/keepmq.db c_end c t2 last_c last_t deadline spill
		c_end=$(count_rows "$db")
		spill=$(cat "$dir"/data/spill/*.spill 2>/dev/null | wc -c)
		c=$c_end t2=$t1 last_c=$c last_t=$(now)
		deadline=$(awk -v a="$t1" -v b="$DRAIN_TIMEOUT" 'BEGIN {printf "%.3f", a + b}')
		while [ "$c" != "$acked" ]; do
			sleep 0.1
			c=$(count_rows "$db")
			local tn
			tn=$(now)
			echo "$(sub "$tn" "$t0") $c" >>"$dir/rows.tsv"
			if [ "$c" != "$last_c" ]; then
				last_c=$c last_t=$tn t2=$tn
			elif awk -v a="$tn" -v b="$last_t" 'BEGIN {exit !(a - b > 5)}'; then
				break # no progress for 5 s: what is missing is not coming
			fi
			awk -v a="$tn" -v b="$deadline" 'BEGIN {exit !(a > b)}' && break
		done
		[ "$c" = "$c_end" ] && t2=$t1
		local cpu2 threads hwm
		cpu2=$(cpu_s "$BROKER_PID")
		threads=$(thread_cpu "$BROKER_PID")
		hwm=$(hwm_mb "$BROKER_PID")
		local backlog drain prate
		backlog=$((acked - c_end))
		drain=$(sub "$t2" "$t1")
		prate=$(awk -v n="$c" -v a="$t2" -v b="$t0" 'BEGIN {printf "%.1f", n / (a - b)}')
		add_val "$mode" persisted_rate "$prate"
		add_val "$mode" backlog "$backlog"
		add_val "$mode" drain_s "$drain"
		add_val "$mode" hwm_mb "$hwm"
		if [ "$c" = "$acked" ]; then
			add_val "$mode" rows_ok 1
		else
			add_note "$mode" "MISSING"
		fi
		summary="$summary; rows in mqtt_msg: $c_end when the load ended, $c after $(fmt "$drain") s ($([ "$c" = "$acked" ] && echo "= acked" || echo "MISSING $((acked - c)) of $acked")); spill file when the load ended: $((spill / 1048576)) MiB; persisted $(fmt "$prate") rows/s over $(sub "$t2" "$t0") s; broker peak RSS $hwm MiB; thread CPU s: $threads (total $(sub "$cpu2" "$cpu0"))"
	else
		add_val "$mode" hwm_mb "$(hwm_mb "$BROKER_PID")"
		summary="$summary; broker peak RSS $(hwm_mb "$BROKER_PID") MiB; thread CPU s: $(thread_cpu "$BROKER_PID")"
	fi
	stop_broker
	# the next runs should not share the disk with this one's files
	[ "$KEEP" = 1 ] || rm -rf "$dir/keepmq.db" "$dir/keepmq.db-wal" "$dir/keepmq.db-shm" "$dir/data"
	printf '%s\t%s\t%s\n' "$mode" "$rep" "$summary" >>"$RUNLOG"
	log "$mode #$rep: $summary"
}

run_limit() { # row rep
	local row=$1 rep=$2 dir=$TMP/$1-$2 n=${1#limit} run=$WINDOW
	n=${n%-rr}
	[ "$row" = limit100-rr ] && run=1
	mkdir -p "$dir"
	local out=$dir/limit.json
	"$SQLITE_LIMIT" --db "$dir/limit.db" --rows-per-txn "$n" --run "$run" --duration "$LIMIT_SECONDS" \
		--payload "$PAYLOAD" --publishers "$PUBLISHERS" --json >"$out" 2>"$dir/limit.err"
	local rc=$?
	if [ ! -s "$out" ]; then
		add_note "$row" failed
		echo -e "$row\t$rep\tfailed (exit $rc): $(head -c 200 "$dir/limit.err")" >>"$RUNLOG"
		log "$row #$rep: failed (exit $rc)"
		return
	fi
	[ "$(jget "$out" ok)" != 1 ] && add_note "$row" count-mismatch
	add_val "$row" rows_per_s "$(jget "$out" rows_per_s)"
	add_val "$row" commit_avg_us "$(jget "$out" commit_avg_us)"
	local summary
	summary="$(fmt "$(jget "$out" rows_per_s)") rows/s ($(jget "$out" rows) rows in $(jget "$out" seconds) s, $(jget "$out" txns) transactions, commit avg $(fmt "$(jget "$out" commit_avg_us)") µs, max $(fmt "$(jget "$out" commit_max_us)") µs, CPU $(jget "$out" cpu_s) s, waited $(jget "$out" run_delay_s) s for a CPU, file $(($(jget "$out" db_bytes) / 1048576)) MiB)"
	printf '%s\t%s\t%s\n' "$row" "$rep" "$summary" >>"$RUNLOG"
	log "$row #$rep: $summary"
}

START_TS=$(date -u +%Y-%m-%dT%H:%M:%SZ)
START_S=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "rows: ${ROWS[*]}; $REPEAT repeat(s); warm-up ${WARMUP}s, measured ${DURATION}s"
for rep in $(seq 1 "$REPEAT"); do
	for row in "${ROWS[@]}"; do
		# Start every run with no dirty pages of an earlier one still
		# waiting to be written back to the same disk.
		sync -f "$TMP" 2>/dev/null || sync
		case $row in
		limit*) run_limit "$row" "$rep" ;;
		*) run_keepmq "$row" "$rep" ;;
		esac
	done
done
ELAPSED=$(($(date +%s) - START_S))

# ---------------------------------------------------------------- report
has() { [[ " ${ROWS[*]} " == *" $1 "* ]]; }
with_note() { # value row
	local v
	v=$(fmt "$1")
	[ -n "${NOTE[$2]:-}" ] && v="$v (${NOTE[$2]# })"
	echo "$v"
}
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print ""; else printf "%.2f", a / b}'; }

NONE=$(cell none pub_rate)
ASYNC=$(cell async pub_rate)
SYNC=$(cell sync pub_rate)
L100=$(cell limit100 rows_per_s)
L1=$(cell limit1 rows_per_s)
R_ASYNC=$(ratio "$ASYNC" "$NONE")
R_SYNC=$(ratio "$SYNC" "$L100")
verdict() { # ratio threshold
	[ -z "$1" ] && { echo "not measured"; return; }
	[ "$RATE" != 0 ] && { echo "fixed offered load: the targets apply to saturation; compare CPU"; return; }
	awk -v r="$1" -v t="$2" 'BEGIN {print ((r >= t) ? "**met**" : "**missed**")}'
}

any_backend_row() { local m; for m in none async async-mem sync; do has $m && return 0; done; return 1; }
any_state_row() { local m; for m in "${ROWS[@]}"; do is_state_row "$m" && return 0; done; return 1; }

# The state store's table (rows st-*, off-*).
state_report() {
	local m what base exp
	echo "## Broker state store: persistent subscriber (state.store = sqlite)"
	echo
	echo "The subscriber is a persistent session (MQTT 3.1.1 clean session 0). st-*: it is online and"
	echo "acknowledges, so every message is stored (keepmq_msg + keepmq_queue) and deleted again;"
	echo "off-*: it subscribed and disconnected before the publishers started, so every message"
	echo "queues for it and stays stored (mqtt.max_mqueue_len = $OFFLINE_MQUEUE). No backend rule."
	echo "Stored msg/s = acked messages (offline: rows in keepmq_queue) / (load start → broker idle,"
	echo "i.e. the state writer done); in a run flagged DROPPED the online figure counts messages whose"
	echo "changes were partly not written."
	echo "\"Tables as expected\": keepmq_queue and keepmq_msg hold 0 rows (online) or one per acked"
	echo "message (offline), both when the broker went idle and after SIGTERM. CPU wait = seconds"
	echo "the broker's threads were runnable but waiting for a CPU during the load (median)."
	echo
	echo "| Row | What | msg/s acked | Stored msg/s | keepmq_queue rows when the load stopped | Writer busy after the load, s | Tables as expected | Broker CPU % | CPU wait s | Peak RSS MiB |"
	echo "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"
	for m in st-none st-async st-sync off-none off-async off-sync; do
		has $m || continue
		case $m in
		st-*) what="persistent subscriber online" ;;
		off-*) what="persistent subscriber offline" ;;
		esac
		case ${m#*-} in
		none) what="$what, state.store = none" ;;
		*) what="$what, state.store = sqlite, delivery_mode = ${m#*-}" ;;
		esac
		if [ "${m#*-}" = none ]; then
			echo "| $m | $what | $(with_note "$(cell $m pub_rate)" $m) | – | – | – | – | $(fmt "$(cell $m cpu_pct)") | $(fmt "$(cell $m cpu_wait)") | $(fmt "$(cell $m hwm_mb)") |"
		else
			echo "| $m | $what | $(with_note "$(cell $m pub_rate)" $m) | $(fmt "$(cell $m stored_rate)") | $(fmt "$(cell $m backlog)") | $(fmt "$(cell $m drain_s)") | $(echo ${VAL["$m|rows_ok"]:-} | wc -w)/$REPEAT runs | $(fmt "$(cell $m cpu_pct)") | $(fmt "$(cell $m cpu_wait)") | $(fmt "$(cell $m hwm_mb)") |"
		fi
	done
	has limit100 && echo "| limit100 | keepmq-sqlite-limit: the backend's mqtt_msg INSERT, 100 rows per transaction (context) | $(with_note "$L100" limit100) rows/s | – | – | – | – | – | – | – |"
	has limit100-rr && echo "| limit100-rr | the same, publishers round robin | $(with_note "$(cell limit100-rr rows_per_s)" limit100-rr) rows/s | – | – | – | – | – | – | – |"
	has limit1 && echo "| limit1 | the same, 1 row per transaction | $(with_note "$L1" limit1) rows/s | – | – | – | – | – | – | – |"
	echo
	echo "| Ratio | Value |"
	echo "|---|---:|"
	for base in st off; do
		for m in async sync; do
			has $base-$m && has $base-none || continue
			echo "| $base-$m / $base-none (acked) | $(ratio "$(cell $base-$m pub_rate)" "$(cell $base-none pub_rate)" || true) |"
		done
	done
	for m in st-async st-sync off-async off-sync; do
		has $m && has limit100 || continue
		echo "| $m stored msg/s / limit100 | $(ratio "$(cell $m stored_rate)" "$L100" || true) |"
	done
	has st-none && has none &&
		echo "| st-none / none (persistent vs clean subscriber, no store) | $(ratio "$(cell st-none pub_rate)" "$NONE" || true) |"
	echo
	echo "Median latency publisher → subscriber (online rows; not the PUBACK): st-none p50"
	echo "$(fmt "$(cell st-none lat_p50_us)") µs / p99 $(fmt "$(cell st-none lat_p99_us)"), st-async $(fmt "$(cell st-async lat_p50_us)") / $(fmt "$(cell st-async lat_p99_us)"),"
	echo "st-sync $(fmt "$(cell st-sync lat_p50_us)") / $(fmt "$(cell st-sync lat_p99_us)")."
	echo
}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUTDIR"
MD=$OUTDIR/persist-$STAMP.md
any_backend_row || ! any_state_row || MD=$OUTDIR/state-$STAMP.md
{
	if any_backend_row || ! any_state_row; then
		echo "# keepmq persisted QoS 1 publishing (SQLite) — $START_TS"
	else
		echo "# keepmq broker state store (SQLite), persistent subscriber — $START_TS"
	fi
	echo
	echo "Each cell is the median of $REPEAT run(s); runs alternate between the rows, each on a fresh"
	echo "broker with a fresh database file. keepmq rows: QoS 1, $PUBLISHERS publishers → 1 subscriber"
	echo "(bench/#), $PAYLOAD-byte payloads, $WINDOW unacknowledged PUBLISHes per publisher,"
	echo "offered load: $([ "$RATE" = 0 ] && echo "as much as flow control allows" || echo "$RATE msg/s in total");"
	echo "msg/s = PUBLISHes acknowledged per second in the measured window."
	echo
	any_state_row && state_report
	if any_backend_row || ! any_state_row; then
	any_state_row && { echo "## Backend rule on_message_publish (clean subscriber)"; echo; }
	echo "| Row | What | msg/s (rows/s for SQLite) | Persisted rows/s, load start → last row committed | Backlog when the load stopped | Drain s | rows = acked | Broker CPU % |"
	echo "|---|---|---:|---:|---:|---:|---|---:|"
	has none && echo "| none | keepmq, no backend | $(with_note "$NONE" none) | – | – | – | – | $(fmt "$(cell none cpu_pct)") |"
	for m in async async-mem sync; do
		has $m || continue
		ok="$(echo ${VAL["$m|rows_ok"]:-} | wc -w)/$REPEAT"
		what="delivery_mode = ${m%-mem}"
		[ "$m" = async-mem ] && what="$what, spill_dir = \"\" (memory queue only)"
		echo "| $m | keepmq + SQLite, on_message_publish, $what | $(with_note "$(cell $m pub_rate)" $m) | $(fmt "$(cell $m persisted_rate)") | $(fmt "$(cell $m backlog)") | $(fmt "$(cell $m drain_s)") | $ok runs | $(fmt "$(cell $m cpu_pct)") |"
	done
	has limit100 && echo "| limit100 | keepmq-sqlite-limit, 100 rows per transaction, runs of $WINDOW rows per publisher | $(with_note "$L100" limit100) | – | – | – | – | – |"
	has limit100-rr && echo "| limit100-rr | keepmq-sqlite-limit, 100 rows per transaction, publishers round robin | $(with_note "$(cell limit100-rr rows_per_s)" limit100-rr) | – | – | – | – | – |"
	has limit1 && echo "| limit1 | keepmq-sqlite-limit, 1 row per transaction | $(with_note "$L1" limit1) | – | – | – | – | – |"
	echo
	echo "| Ratio | Value | Target | |"
	echo "|---|---:|---|---|"
	echo "| async / none | ${R_ASYNC:-n/a} | ≥ 0.80 (async costs under 20%) | $(verdict "$R_ASYNC" 0.80) |"
	echo "| sync / limit100 | ${R_SYNC:-n/a} | ≥ 0.50 (half of SQLite's grouped limit) | $(verdict "$R_SYNC" 0.50) |"
	r=$(ratio "$(cell async-mem pub_rate)" "$NONE")
	echo "| async-mem / none | ${r:-n/a} | (≥ 0.80) | $(verdict "$r" 0.80) |"
	r=$(ratio "$(cell async persisted_rate)" "$L100")
	echo "| async persisted rows/s / limit100 | ${r:-n/a} | – | |"
	r=$(ratio "$(cell async-mem persisted_rate)" "$L100")
	echo "| async-mem persisted rows/s / limit100 | ${r:-n/a} | – | |"
	r=$(ratio "$SYNC" "$(cell limit100-rr rows_per_s)")
	echo "| sync / limit100-rr | ${r:-n/a} | – | |"
	r=$(ratio "$SYNC" "$L1")
	echo "| sync / limit1 | ${r:-n/a} | – | |"
	r=$(ratio "$SYNC" "$NONE")
	echo "| sync / none | ${r:-n/a} | – | |"
	echo
	echo "Median latency (publisher → subscriber, not the PUBACK): none p50 $(fmt "$(cell none lat_p50_us)") µs /"
	echo "p99 $(fmt "$(cell none lat_p99_us)"), async $(fmt "$(cell async lat_p50_us)") / $(fmt "$(cell async lat_p99_us)"),"
	echo "sync $(fmt "$(cell sync lat_p50_us)") / $(fmt "$(cell sync lat_p99_us)"). Peak broker RSS (MiB): async $(fmt "$(cell async hwm_mb)"), sync $(fmt "$(cell sync hwm_mb)")."
	echo
	fi
	echo "## Machine"
	echo
	echo "- CPUs: $(nproc) ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo))"
	echo "- Memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
	echo "- Kernel: $(uname -srm); file system of $TMP: $(df -T "$TMP" 2>/dev/null | awk 'NR == 2 {print $2}')"
	echo "- SQLite: $("$SQLITE_LIMIT" --rows 1 --json 2>/dev/null | sed -n 's/.*"sqlite_version":"\([^"]*\)".*/\1/p')"
	echo "- keepmq: $KEEPMQ_BIN, built $(date -u -r "$KEEPMQ_BIN" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo '?') (source tree at the end of the run: $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'), HEAD committed $(cd "$ROOT" && git log -1 --format=%cd --date=iso-strict 2>/dev/null || echo '?'))"
	echo "- Load average before the run: $LOAD_BEFORE; wall time ${ELAPSED}s"
	echo
	echo "## Commands"
	echo
	echo "- Invocation: \`bench/persist.sh${ORIG_ARGS[*]:+ ${ORIG_ARGS[*]}}\`"
	echo "- keepmq rows: \`keepmq -c keepmq.conf\` (in the run's temp directory), then"
	echo "  \`keepmq-loadgen ${LG_ARGS[*]} --port \$PORT --json\`"
	d=$(mktemp -d "$TMP/conf.XXXX")
	if any_backend_row || ! any_state_row; then
	echo "- keepmq.conf for async (sync: \`delivery_mode = sync\`; async-mem adds"
	echo "  \`backend.sqlite.pool1.spill_dir = \"\"\`; none: the first two lines only):"
	echo
	echo '```'
	write_conf async '$PORT' "$d" | xargs cat | sed "s#$d#\$RUN_DIR#"
	echo '```'
	echo
	echo "- Rows counted with \`keepmq-sqlite-limit --count \$RUN_DIR/keepmq.db\` (SELECT count(*) FROM mqtt_msg)."
	fi
	if any_state_row; then
	echo "- State rows: the load generator adds \`--sub-session persistent\` (st-*) or"
	echo "  \`--sub-session offline\` (off-*). keepmq.conf for off-sync (st-*: without the"
	echo "  max_mqueue_len line; async: \`delivery_mode = async\`; *-none: no state.* lines):"
	echo
	echo '```'
	write_conf off-sync '$PORT' "$d" | xargs cat | sed "s#$d#\$RUN_DIR#"
	echo '```'
	echo
	echo "- Tables counted with \`sqlite3 -readonly \$RUN_DIR/keepmq.db 'SELECT (SELECT count(*) FROM keepmq_queue), (SELECT count(*) FROM keepmq_msg)'\`"
	echo "  once the broker's CPU time stopped moving (≤ 1 tick in each of three 0.2 s polls), and again after SIGTERM."
	fi
	echo "- limitN: \`keepmq-sqlite-limit --db \$RUN_DIR/limit.db --rows-per-txn N --run $WINDOW --duration $LIMIT_SECONDS --payload $PAYLOAD --publishers $PUBLISHERS --json\`"
	echo "  (limit100-rr: \`--run 1\`)"
	echo
	echo "## Every run"
	echo
	echo "| Row | # | Result |"
	echo "|---|---:|---|"
	while IFS=$'\t' read -r row rep summary; do
		echo "| $row | $rep | $summary |"
	done <"$RUNLOG"
} >"$MD"

cat "$MD"
log "results written to $MD"
