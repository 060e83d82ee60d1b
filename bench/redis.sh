#!/usr/bin/env bash
# redis.sh - QoS 1 publishing persisted into Redis by on_message_publish:
# keepmq with no backend, with the Redis backend in async and in sync
# delivery mode (pool_size 8, the default, and 4 and 2), and what Redis
# itself takes for the same commands on this machine.
#
# Design
# ------
# Rows (every run is fresh: its own temp directory, config, free ports, a
# new redis-server and a new broker):
#   none      keepmq, no backend
#   async     keepmq + backend.redis, delivery_mode = async, pool_size 8 (the
#             default), the one rule
#             backend.redis.hook.message.publish.1 = on_message_publish
#   async-p4, async-p2   the same with pool_size 4 and 2
#   sync      the same rule, delivery_mode = sync (PUBACK after Redis replied)
#   sync-p4, sync-p2     the same with pool_size 4 and 2
#   limit     redis-benchmark -P 64 -c 10, one invocation per command that
#             on_message_publish sends for one message (HSET, EXPIRE, ZADD,
#             ZREMRANGEBYLEX, EXPIRE, SADD; shapes below), against one fresh
#             redis-server, in that order. Each invocation's requests/s is
#             r_i; a message needs one of each, so Redis's limit for this
#             path is 1 / sum(1 / r_i) messages/s.
#   limit-mix the exact command stream of N messages (the six commands per
#             message, in order, 32-hex ids growing as the broker's do, ten
#             topics, runs of --window messages per publisher), written to
#             a file beforehand and sent with redis-cli --pipe (one
#             connection, no waiting for replies) to a fresh redis-server:
#             messages / elapsed. A cross-check of `limit`, whose random
#             ids insert at random places in one sorted set.
# Runs alternate none, async, async-p4, async-p2, sync, sync-p4, sync-p2,
# limit, limit-mix, none, ... --repeat times, so drift of the shared machine
# hits every row alike; each cell is the median of the repeats.
#
# The limit's commands (N = --limit-requests, 1000000; P20 = 20 hex digits;
# __rand_int__ = 12 random decimal digits, a fresh draw at every place in
# every command; together a 32-character id as the broker's):
#   HSET mqtt:msg:P20__rand_int__ id P20__rand_int__ from rb44-p0 qos 1
#        topic bench/5 retain 0 payload <64 B> ts 1700000000   (-r 10^9:
#        every HSET creates a new hash, as every message does)
#   EXPIRE mqtt:msg:Q20__rand_int__ 3600  (-r N, on N hashes created
#        beforehand by one untimed EVAL, so every EXPIRE finds its key, as
#        the broker's does; about 63% set a new TTL, the rest renew one)
#   ZADD mqtt:msg:bench/5 1 P20__rand_int__  (-r 10^9)
#   ZREMRANGEBYLEX mqtt:msg:bench/5 - (<id below every member>  (removes
#        nothing, as within the hour of expiry; the set has N members)
#   EXPIRE mqtt:msg:bench/5 3600
#   SADD mqtt:index:msg bench/5
# One topic set instead of ten: redis-benchmark has one random range for
# every __rand_int__ of a command, so the key cannot take 10 values while
# the member takes 10^9. The set ends with N members instead of ~1/10 of
# the messages of a run, and random members insert anywhere in it, where
# the broker's ids (time first) append at its end; limit-mix has the real
# shape. N (and limit-mix's message count) default to 10^6, about what an
# async run stores, so Redis's key space grows to a similar size: its cost
# per new key grows with it (dict lookups, rehashing, page faults).
#
# Load (keepmq rows): keepmq-loadgen pubsub, QoS 1, 10 publishers -> 1
# subscriber on bench/# (fan-in), 64-byte payloads, at most --window (64)
# unacknowledged PUBLISHes per publisher, --max-backlog 64 (the same as
# bench/persist.sh; see bench/README.md). Client ids are
# <--prefix>-p<i>, with a fixed prefix: a client's jobs go to the pool
# connection its id hashes to, and the default prefix rb44 spreads the 10
# publishers as evenly as the hash allows (pool_size 8: at most 2 per
# connection, one idle; 4: 3/3/2/2; 2: 5/5); with random ids one connection
# often gets 3-4 of them.
#
# After each persisted run the driver polls Redis until the messages stored
# equal the PUBACKs received (async: once the queue has drained), or nothing
# moves for 5 s. Messages stored = sum of ZCARD over the topics' sorted sets
# (the members of mqtt:index:msg, one EVAL); at the end the hashes are
# counted too (DBSIZE minus the sets). Fewer than acked in either is
# flagged MISSING; more hashes than sorted-set members (two messages with
# one id) is flagged ID-CLASH. Persisted msg/s = messages stored / (load
# start -> the last one stored). Also recorded: redis-server's CPU, its
# INFO commandstats (microseconds inside the commands per message) and
# error replies, the broker's CPU per thread and any line in its log
# (log.level = warning; flagged log).
#
# Needs bash, coreutils, awk, ss (iproute2), redis-server, redis-cli and
# redis-benchmark (Debian: redis-server, redis-tools). Writes
# bench/results/redis-<UTC time>.md and prints it. Nothing asserts on
# timings.
#
# Usage: bench/redis.sh [--quick] [--repeat R] [--seconds S] [--warmup S]
#                       [--only REGEX] [--limit-requests N] [--no-build] [--keep]
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
KEEPMQ_BIN=${KEEPMQ_BIN:-$BUILD_DIR/keepmq}
LOADGEN=${LOADGEN:-$BUILD_DIR/keepmq-loadgen}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
REDIS_CLI=${REDIS_CLI:-redis-cli}
REDIS_BENCHMARK=${REDIS_BENCHMARK:-redis-benchmark}
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
DRAIN_TIMEOUT=180
LIMIT_N=""
MIX_N=""
PREFIX=rb44
BUILD=1
KEEP=0
ORIG_ARGS=("$@")

usage() {
	sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	cat <<'EOF'
Options:
  --quick            short runs (warm-up 0.5 s, 2 s measured, limit 100000
                     requests per command, limit-mix 50000 messages), one repeat
  --repeat R         runs per row, median reported (3; quick: 1)
  --seconds S        measured seconds per keepmq run (5; quick: 2); also --duration
  --warmup S         warm-up seconds (1; quick: 0.5)
  --only REGEX       rows to run (none|async|async-p4|async-p2|sync|sync-p4|
                     sync-p2|limit|limit-mix)
  --limit-requests N requests per redis-benchmark invocation (1000000)
  --mix-messages N   messages in the limit-mix stream (1000000)
  --window N         unacknowledged PUBLISHes per publisher (64)
  --rate R           offer R msg/s in total instead of as many as flow control
                     allows (0 = saturate)
  --publishers P     publishers (10)
  --prefix S         client id prefix (rb44; see above)
  --drain-timeout S  longest wait for an async queue to drain (180)
  --no-build         do not (re)build keepmq and keepmq-loadgen
  --keep             keep the temp directory (configs, logs, JSON)
Environment: BUILD_DIR (build-bench), KEEPMQ_BIN, LOADGEN, REDIS_SERVER,
REDIS_CLI, REDIS_BENCHMARK.
EOF
}

while [ $# -gt 0 ]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--repeat) REPEAT=$2; shift ;;
	--seconds | --duration) DURATION=$2; shift ;;
	--warmup) WARMUP=$2; shift ;;
	--only) ONLY=$2; shift ;;
	--limit-requests) LIMIT_N=$2; shift ;;
	--mix-messages) MIX_N=$2; shift ;;
	--window) WINDOW=$2; shift ;;
	--rate) RATE=$2; shift ;;
	--publishers) PUBLISHERS=$2; shift ;;
	--prefix) PREFIX=$2; shift ;;
	--drain-timeout) DRAIN_TIMEOUT=$2; shift ;;
	--no-build) BUILD=0 ;;
	--keep) KEEP=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "redis.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

if [ "$QUICK" = 1 ]; then
	: "${DURATION:=2}" "${WARMUP:=0.5}" "${LIMIT_N:=100000}" "${MIX_N:=50000}"
	[[ " ${ORIG_ARGS[*]} " == *" --repeat "* ]] || REPEAT=1
else
	: "${DURATION:=5}" "${WARMUP:=1}" "${LIMIT_N:=1000000}" "${MIX_N:=1000000}"
fi

log() { echo "redis.sh: $*" >&2; }

ALL_ROWS=(none async async-p4 async-p2 sync sync-p4 sync-p2 limit limit-mix)
ROWS=()
if [ -z "$ONLY" ]; then
	ROWS=("${ALL_ROWS[@]}")
else
	for r in "${ALL_ROWS[@]}"; do
		[[ $r =~ ^($ONLY)$ ]] && ROWS+=("$r")
	done
fi
[ ${#ROWS[@]} -gt 0 ] || { log "--only '$ONLY' matches no row (${ALL_ROWS[*]})"; exit 2; }

for b in "$REDIS_SERVER" "$REDIS_CLI" "$REDIS_BENCHMARK"; do
	command -v "$b" >/dev/null || { log "missing $b (Debian: apt-get install redis-server redis-tools)"; exit 1; }
done
if [ "$BUILD" = 1 ]; then
	log "building keepmq and keepmq-loadgen in $BUILD_DIR"
	if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
		cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null ||
			{ log "cmake configure failed"; exit 1; }
	fi
	cmake --build "$BUILD_DIR" -j2 --target keepmq keepmq-loadgen >/dev/null ||
		{ log "build failed"; exit 1; }
fi
for b in "$KEEPMQ_BIN" "$LOADGEN"; do
	[ -x "$b" ] || { log "missing $b (build it, or drop --no-build)"; exit 1; }
done

TMP=$(mktemp -d /tmp/keepmq-redis.XXXXXX)
BROKER_PID=""
REDIS_PID=""
cleanup() {
	[ -n "$BROKER_PID" ] && kill -9 "$BROKER_PID" 2>/dev/null
	[ -n "$REDIS_PID" ] && kill -9 "$REDIS_PID" 2>/dev/null
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
# CPU seconds (user + system) of a process; of each of its threads.
cpu_s() {
	awk -v t="$CLK_TCK" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t}' "/proc/$1/stat" 2>/dev/null
}
ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null; }
# "tid:cpu" in thread creation order (tids grow): keepmq starts its main
# thread, then the pool connections' threads, then the I/O workers.
thread_cpu() {
	local f
	for f in /proc/"$1"/task/*/stat; do
		awk -v t="$CLK_TCK" '{tid = $1; sub(/^.*\) /, ""); printf "%d %.2f\n", tid, ($12 + $13) / t}' "$f" 2>/dev/null
	done | sort -n | awk '{printf "%s%s", (NR > 1 ? " " : ""), $2}'
}
run_delay_s() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $2} END {printf "%.2f", s / 1e9}'; }
hwm_mb() { awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null; }

rcli() { "$REDIS_CLI" -h 127.0.0.1 -p "$RPORT" "$@"; }

start_redis() { # dir -> sets RPORT, REDIS_PID
	RPORT=$("$LOADGEN" freeport) || return 1
	(cd "$1" && exec "$REDIS_SERVER" --bind 127.0.0.1 --port "$RPORT" --save '' --appendonly no \
		--dir "$1" --daemonize no --logfile "$1/redis.log") >/dev/null 2>&1 &
	REDIS_PID=$!
	local _
	for _ in $(seq 1 50); do
		kill -0 "$REDIS_PID" 2>/dev/null || { wait "$REDIS_PID" 2>/dev/null; REDIS_PID=""; return 1; }
		[ "$(rcli PING 2>/dev/null)" = PONG ] && return 0
		sleep 0.1
	done
	stop_redis
	return 1
}

stop_redis() {
	[ -z "$REDIS_PID" ] && return
	kill -TERM "$REDIS_PID" 2>/dev/null
	local _
	for _ in $(seq 1 50); do
		kill -0 "$REDIS_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$REDIS_PID" 2>/dev/null
	wait "$REDIS_PID" 2>/dev/null
	REDIS_PID=""
}

pool_size() { case $1 in *-p[0-9]*) echo "${1##*-p}" ;; *) echo 8 ;; esac; }
mode_of() { echo "${1%-p[0-9]*}"; }

write_conf() { # row port redis_port dir -> config path
	local f=$4/keepmq.conf
	{
		echo "listener.tcp.default = 127.0.0.1:$2"
		echo "log.level = warning"
		if [ "$1" != none ]; then
			echo "backend.redis.pool1.server = 127.0.0.1:$3"
			echo "backend.redis.pool1.pool_size = $(pool_size "$1")"
			echo "backend.redis.delivery_mode = $(mode_of "$1")"
			echo 'backend.redis.hook.message.publish.1 = {"topic": "#", "action": {"function": "on_message_publish"}, "pool": "pool1"}'
		fi
	} >"$f"
	echo "$f"
}

start_broker() { # row dir -> sets PORT, BROKER_PID
	PORT=$("$LOADGEN" freeport) || return 1
	local conf
	conf=$(write_conf "$1" "$PORT" "${RPORT:-0}" "$2")
	(cd "$2" && exec "$KEEPMQ_BIN" -c "$conf") >>"$2/keepmq.log" 2>&1 &
	BROKER_PID=$!
	local _
	for _ in $(seq 1 50); do
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
	local _
	for _ in $(seq 1 100); do
		kill -0 "$BROKER_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$BROKER_PID" 2>/dev/null
	wait "$BROKER_PID" 2>/dev/null
	BROKER_PID=""
}

# Messages stored: sum of ZCARD over the topics in mqtt:index:msg.
COUNT_LUA="local s = 0 for _, t in ipairs(redis.call('SMEMBERS', 'mqtt:index:msg')) do s = s + redis.call('ZCARD', 'mqtt:msg:' .. t) end return s"
count_msgs() { local c; c=$(rcli EVAL "$COUNT_LUA" 0 2>/dev/null); [[ $c =~ ^[0-9]+$ ]] && echo "$c" || echo -1; }
# Hashes: every key but the topic sets and the index set.
count_hashes() {
	local db nt
	db=$(rcli DBSIZE 2>/dev/null) nt=$(rcli SCARD mqtt:index:msg 2>/dev/null)
	[[ $db =~ ^[0-9]+$ && $nt =~ ^[0-9]+$ ]] && echo $((db - nt - (nt > 0 ? 1 : 0))) || echo -1
}
# "calls usec" summed over INFO commandstats, or of one command
cmdstats() { # [command]
	rcli INFO commandstats 2>/dev/null | tr -d '\r' | awk -F'[:=,]' -v want="${1:-}" '
		/^cmdstat_/ {c = substr($1, 9); if (want != "" && c != want) next
			if (c == "info" || c == "ping" || c == "eval" || c == "dbsize" || c == "scard" || c == "command") next
			for (i = 2; i < NF; i += 2) {if ($i == "calls") n += $(i + 1); if ($i == "usec") u += $(i + 1)}}
		END {printf "%d %d", n, u}'
}
error_replies() { rcli INFO stats 2>/dev/null | tr -d '\r' | awk -F: '/^total_error_replies:/ {print $2}'; }
redis_mem_mb() { rcli INFO memory 2>/dev/null | tr -d '\r' | awk -F: '/^used_memory:/ {printf "%.0f", $2 / 1048576}'; }

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
# shellcheck disable=SC2086 # the repeats' values, split on purpose
cell() { median ${VAL["$1|$2"]:-}; }
fmti() {
	[ -z "$1" ] && { echo "n/a"; return; }
	awk -v x="$1" 'BEGIN {printf "%.0f", x}'
}
fmt() {
	[ -z "$1" ] && { echo "n/a"; return; }
	awk -v x="$1" 'BEGIN {if (x >= 100) printf "%.0f", x; else if (x >= 10) printf "%.1f", x; else printf "%.2f", x}'
}

LG_ARGS=(pubsub --topology fanin --publishers "$PUBLISHERS" --subscribers 1 --qos 1
	--payload "$PAYLOAD" --window "$WINDOW" --max-backlog "$MAX_BACKLOG"
	--warmup "$WARMUP" --duration "$DURATION" --clients-prefix "$PREFIX")
[ "$RATE" != 0 ] && LG_ARGS+=(--rate "$RATE")

run_keepmq() { # row rep
	local row=$1 rep=$2 dir=$TMP/$1-$2
	mkdir -p "$dir"
	RPORT=""
	if [ "$row" != none ] && ! start_redis "$dir"; then
		add_note "$row" redis-start-failed
		echo -e "$row\t$rep\tredis-server did not start: $(tail -3 "$dir/redis.log" 2>/dev/null | tr '\n' ' ')" >>"$RUNLOG"
		log "$row #$rep: redis-server did not start"
		return
	fi
	if ! start_broker "$row" "$dir"; then
		add_note "$row" start-failed
		log "$row #$rep: keepmq did not start:"
		sed 's/^/  /' "$dir/keepmq.log" | head -5 >&2
		echo -e "$row\t$rep\tbroker did not start: $(head -c 200 "$dir/keepmq.log")" >>"$RUNLOG"
		stop_redis
		return
	fi
	sleep 0.3 # let the pool connections connect
	local out=$dir/loadgen.json cpu0 t0 t1 cpu1 rc rd0 rd1 rcpu0=0 rcpu1=0 rrd0=0 rrd1=0
	cpu0=$(cpu_s "$BROKER_PID")
	rd0=$(run_delay_s "$BROKER_PID")
	if [ -n "$REDIS_PID" ]; then rcpu0=$(cpu_s "$REDIS_PID"); rrd0=$(run_delay_s "$REDIS_PID"); fi
	t0=$(now)
	"${LG_TIMEOUT[@]}" "$LOADGEN" "${LG_ARGS[@]}" --port "$PORT" --json >"$out" 2>"$dir/loadgen.err"
	rc=$?
	t1=$(now)
	cpu1=$(cpu_s "$BROKER_PID")
	rd1=$(run_delay_s "$BROKER_PID")
	if [ -n "$REDIS_PID" ]; then rcpu1=$(cpu_s "$REDIS_PID"); rrd1=$(run_delay_s "$REDIS_PID"); fi
	if [ ! -s "$out" ]; then
		add_note "$row" failed
		echo -e "$row\t$rep\tload generator failed (exit $rc): $(head -c 200 "$dir/loadgen.err")" >>"$RUNLOG"
		log "$row #$rep: load generator failed (exit $rc)"
		stop_broker
		stop_redis
		return
	fi
	local k pub recv acked published lost dup errs
	pub=$(jget "$out" pub_rate) recv=$(jget "$out" recv_rate) acked=$(jget "$out" acked)
	published=$(jget "$out" published) lost=$(jget "$out" lost) dup=$(jget "$out" dup)
	errs=$(jget "$out" errors)
	for k in pub_rate recv_rate lat_p50_us lat_p99_us; do add_val "$row" "$k" "$(jget "$out" "$k")"; done
	[ "$rc" != 0 ] && add_note "$row" "exit-$rc"
	[ "${lost:-0}" != 0 ] && add_note "$row" LOSS
	[ "${dup:-0}" != 0 ] && add_note "$row" DUP
	[ "${errs:-0}" != 0 ] && add_note "$row" errors
	[ "$acked" != "$published" ] && add_note "$row" unacked
	local el cpu_pct
	el=$(sub "$t1" "$t0")
	cpu_pct=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$el" 'BEGIN {printf "%.0f", (t > 0 ? 100 * (b - a) / t : 0)}')
	add_val "$row" cpu_pct "$cpu_pct"
	add_val "$row" cpu_wait "$(sub "$rd1" "$rd0")"
	local summary
	summary="$(fmt "$pub") msg/s acked ($(fmt "$recv") received), p50 $(fmt "$(jget "$out" lat_p50_us)") µs, p99 $(fmt "$(jget "$out" lat_p99_us)") µs, published $published, acked $acked, lost $lost, dup $dup, errors $errs; during the load ($el s) broker CPU ${cpu_pct}% of one core, its threads waited $(sub "$rd1" "$rd0") s for a CPU"

	if [ "$row" != none ]; then
		local c_end c t2 last_c last_t deadline tn spill
		c_end=$(count_msgs)
		spill=$(cat "$dir"/data/spill/*.spill 2>/dev/null | wc -c)
		c=$c_end t2=$t1 last_c=$c last_t=$(now)
		deadline=$(awk -v a="$t1" -v b="$DRAIN_TIMEOUT" 'BEGIN {printf "%.3f", a + b}')
		while [ "$c" -lt "$acked" ]; do
			sleep 0.1
			c=$(count_msgs)
			tn=$(now)
			if [ "$c" != "$last_c" ]; then
				last_c=$c last_t=$tn t2=$tn
			elif awk -v a="$tn" -v b="$last_t" 'BEGIN {exit !(a - b > 5)}'; then
				break # no progress for 5 s: what is missing is not coming
			fi
			awk -v a="$tn" -v b="$deadline" 'BEGIN {exit !(a > b)}' && break
		done
		[ "$c" = "$c_end" ] && t2=$t1
		# the broker idle (nothing left to write): at most 1 tick of CPU in
		# each of 3 polls of 0.2 s, at most 10 s
		local tk last_tk idle=0
		last_tk=$(ticks "$BROKER_PID")
		for _ in $(seq 1 50); do
			sleep 0.2
			tk=$(ticks "$BROKER_PID")
			[ -z "$tk" ] && break
			if [ $((tk - last_tk)) -le 1 ]; then idle=$((idle + 1)); [ "$idle" -ge 3 ] && break; else idle=0; fi
			last_tk=$tk
		done
		c=$(count_msgs)
		local h rcpu2 threads hwm cs ncalls usec err_r rmem
		h=$(count_hashes)
		rcpu2=$(cpu_s "$REDIS_PID")
		threads=$(thread_cpu "$BROKER_PID")
		hwm=$(hwm_mb "$BROKER_PID")
		cs=$(cmdstats)
		ncalls=${cs% *} usec=${cs#* }
		err_r=$(error_replies)
		rmem=$(redis_mem_mb)
		local backlog drain prate rcpu_all rpct upm
		backlog=$((acked - c_end))
		drain=$(sub "$t2" "$t1")
		prate=$(awk -v n="$c" -v a="$t2" -v b="$t0" 'BEGIN {printf "%.1f", n / (a - b)}')
		rcpu_all=$(sub "$rcpu2" "$rcpu0")
		# redis-server's share of a core from the load start to the last message stored
		rpct=$(awk -v c="$rcpu_all" -v a="$t2" -v b="$t0" 'BEGIN {printf "%.0f", 100 * c / (a - b)}')
		upm=$(awk -v u="$usec" -v n="$c" 'BEGIN {if (n > 0) printf "%.2f", u / n}')
		add_val "$row" persisted_rate "$prate"
		add_val "$row" backlog "$backlog"
		add_val "$row" drain_s "$drain"
		add_val "$row" hwm_mb "$hwm"
		add_val "$row" redis_pct "$rpct"
		add_val "$row" redis_cpu_per_msg_us "$(awk -v c="$rcpu_all" -v n="$c" 'BEGIN {if (n > 0) printf "%.2f", 1e6 * c / n}')"
		add_val "$row" cmd_us_per_msg "$upm"
		local verdict
		if [ "$c" -ge "$acked" ] && [ "$h" -ge "$acked" ]; then
			add_val "$row" rows_ok 1
			verdict="= acked"
			[ "$c" -gt "$acked" ] && verdict="$((c - acked)) more than acked (published $published)"
		else
			add_note "$row" MISSING
			verdict="MISSING $((acked - c)) of $acked"
		fi
		[ "$h" != "$c" ] && { add_note "$row" ID-CLASH; verdict="$verdict; hashes $h != set members $c"; }
		[ "${err_r:-0}" != 0 ] && add_note "$row" redis-errors
		local logl
		logl=$(grep -cv '^\s*$' "$dir/keepmq.log")
		[ "$logl" != 0 ] && add_note "$row" log
		summary="$summary, redis-server $(awk -v c="$(sub "$rcpu1" "$rcpu0")" -v t="$el" 'BEGIN {printf "%.0f", 100 * c / t}')% (waited $(sub "$rrd1" "$rrd0") s); messages in Redis: $c_end when the load ended, $c after $(fmt "$drain") s ($verdict); spill files when the load ended: $((spill / 1048576)) MiB; persisted $(fmt "$prate") msg/s over $(sub "$t2" "$t0") s; redis-server CPU $rcpu_all s ($rpct% of a core over that time, $(fmt "$(awk -v c="$rcpu_all" -v n="$c" 'BEGIN {if (n > 0) printf "%.2f", 1e6 * c / n}')") µs per message), commands $ncalls ($(awk -v a="$ncalls" -v n="$c" 'BEGIN {if (n > 0) printf "%.2f", a / n}') per message, $upm µs per message inside them), error replies ${err_r:-?}, used_memory $rmem MiB; broker peak RSS $hwm MiB; broker thread CPU s (creation order: main, $(pool_size "$row") pool connections, I/O workers): $threads (total $(sub "$(cpu_s "$BROKER_PID")" "$cpu0"))"
		[ "$logl" != 0 ] && summary="$summary; broker log ($logl lines): $(head -3 "$dir/keepmq.log" | cut -c1-200 | tr '\n' ' ' | sed 's/|/\\|/g')"
	else
		add_val "$row" hwm_mb "$(hwm_mb "$BROKER_PID")"
		summary="$summary; broker peak RSS $(hwm_mb "$BROKER_PID") MiB; thread CPU s (creation order: main, I/O workers): $(thread_cpu "$BROKER_PID")"
	fi
	stop_broker
	stop_redis
	[ "$KEEP" = 1 ] || rm -rf "$dir/data"
	printf '%s\t%s\t%s\n' "$row" "$rep" "$summary" >>"$RUNLOG"
	log "$row #$rep: $summary"
}

# ------------------------------------------------------------- the limit
P20=01a234d197c00002f3c2 # 20 hex digits + 12 random digits = the 32-hex id
Q20=01a234d197c00003aaaa # the pre-created hashes for EXPIRE
FLOOR=01a2349aa94000000000000000000000 # an id below every member: trims nothing
PAYLOAD_TXT=$(head -c "$PAYLOAD" /dev/zero | tr '\0' 'p')
LIMIT_CMDS=(
	"HSET|-r 1000000000|HSET mqtt:msg:${P20}__rand_int__ id ${P20}__rand_int__ from ${PREFIX}-p0 qos 1 topic bench/5 retain 0 payload $PAYLOAD_TXT ts 1700000000"
	"EXPIRE msg|-r $LIMIT_N|EXPIRE mqtt:msg:${Q20}__rand_int__ 3600"
	"ZADD|-r 1000000000|ZADD mqtt:msg:bench/5 1 ${P20}__rand_int__"
	"ZREMRANGEBYLEX||ZREMRANGEBYLEX mqtt:msg:bench/5 - ($FLOOR"
	"EXPIRE topic||EXPIRE mqtt:msg:bench/5 3600"
	"SADD||SADD mqtt:index:msg bench/5"
)
PREFILL_LUA="for i = 0, tonumber(ARGV[1]) - 1 do local id = ARGV[2] .. string.format('%012d', i) redis.call('HSET', 'mqtt:msg:' .. id, 'id', id, 'from', ARGV[3], 'qos', '1', 'topic', 'bench/5', 'retain', '0', 'payload', ARGV[4], 'ts', '1700000000') end return 1"

run_limit() { # rep
	local rep=$1 dir=$TMP/limit-$1 row=limit
	mkdir -p "$dir"
	if ! start_redis "$dir"; then
		add_note $row redis-start-failed
		echo -e "$row\t$rep\tredis-server did not start" >>"$RUNLOG"
		return
	fi
	# untimed: the hashes the EXPIRE invocation finds
	rcli EVAL "$PREFILL_LUA" 0 "$LIMIT_N" "$Q20" "${PREFIX}-p0" "$PAYLOAD_TXT" >/dev/null
	local spec name ropt cmd out rps inv=0 parts="" c0 c1 t0 t1 cs0 cs1 rpct upc ok=1
	for spec in "${LIMIT_CMDS[@]}"; do
		name=${spec%%|*} ropt=${spec#*|} ropt=${ropt%%|*} cmd=${spec##*|}
		cs0=$(cmdstats "$(echo "${cmd%% *}" | tr 'A-Z' 'a-z')")
		c0=$(cpu_s "$REDIS_PID") t0=$(now)
		# shellcheck disable=SC2086
		out=$("$REDIS_BENCHMARK" -h 127.0.0.1 -p "$RPORT" -P 64 -c 10 -n "$LIMIT_N" $ropt -q $cmd 2>&1 | tr '\r' '\n')
		c1=$(cpu_s "$REDIS_PID") t1=$(now)
		cs1=$(cmdstats "$(echo "${cmd%% *}" | tr 'A-Z' 'a-z')")
		rps=$(echo "$out" | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p' | tail -1)
		if [ -z "$rps" ]; then
			ok=0
			add_note $row failed
			parts="$parts; $name: failed: $(echo "$out" | grep -v '^$' | tail -2 | tr '\n' ' ' | cut -c1-200)"
			continue
		fi
		rpct=$(awk -v a="$c1" -v b="$c0" -v x="$t1" -v y="$t0" 'BEGIN {printf "%.0f", 100 * (a - b) / (x - y)}')
		upc=$(awk -v a="${cs0% *}" -v b="${cs0#* }" -v c="${cs1% *}" -v d="${cs1#* }" 'BEGIN {if (c > a) printf "%.2f", (d - b) / (c - a)}')
		add_val "limit:$name" rps "$rps"
		add_val "limit:$name" usec_per_call "$upc"
		add_val "limit:$name" redis_pct "$rpct"
		inv=$(awk -v s="$inv" -v r="$rps" 'BEGIN {printf "%.12f", s + 1 / r}')
		parts="$parts; $name $(fmt "$rps")/s (redis-server $rpct% of a core, $upc µs per call inside the command)"
	done
	local zc
	zc=$(rcli ZCARD mqtt:msg:bench/5)
	stop_redis
	local lim=""
	[ "$ok" = 1 ] && lim=$(awk -v s="$inv" 'BEGIN {printf "%.1f", 1 / s}')
	[ -n "$lim" ] && add_val $row rows_per_s "$lim"
	local summary
	summary="$(fmt "$lim") msg/s = 1 / sum(1 / r_i)$parts; sorted set at the end: $zc members"
	printf '%s\t%s\t%s\n' "$row" "$rep" "$summary" >>"$RUNLOG"
	log "$row #$rep: $summary"
}

# The exact stream of MIX_N messages, in RESP (written once, untimed).
MIX_FILE=$TMP/mix.resp
make_mix() {
	[ -s "$MIX_FILE" ] && return
	log "writing the limit-mix stream ($MIX_N messages)"
	LC_ALL=C awk -v n="$MIX_N" -v pubs="$PUBLISHERS" -v run="$WINDOW" -v prefix="$PREFIX" \
		-v payload="$PAYLOAD_TXT" -v floor="$FLOOR" '
	function cmd(argc, a,   s, i) {
		s = "*" argc "\r\n"
		for (i = 1; i <= argc; i++) s = s "$" length(a[i]) "\r\n" a[i] "\r\n"
		printf "%s", s
	}
	BEGIN {
		for (m = 0; m < n; m++) {
			p = int(m / run) % pubs           # runs of `run` messages per publisher
			id = sprintf("01a234d1%012x%012d", m, p)
			topic = "bench/" p
			split("", a); a[1] = "HSET"; a[2] = "mqtt:msg:" id; a[3] = "id"; a[4] = id; a[5] = "from"
			a[6] = prefix "-p" p; a[7] = "qos"; a[8] = "1"; a[9] = "topic"; a[10] = topic
			a[11] = "retain"; a[12] = "0"; a[13] = "payload"; a[14] = payload; a[15] = "ts"; a[16] = "1700000000"
			cmd(16, a)
			split("", a); a[1] = "EXPIRE"; a[2] = "mqtt:msg:" id; a[3] = "3600"; cmd(3, a)
			split("", a); a[1] = "ZADD"; a[2] = "mqtt:msg:" topic; a[3] = "1"; a[4] = id; cmd(4, a)
			split("", a); a[1] = "ZREMRANGEBYLEX"; a[2] = "mqtt:msg:" topic; a[3] = "-"; a[4] = "(" floor; cmd(4, a)
			split("", a); a[1] = "EXPIRE"; a[2] = "mqtt:msg:" topic; a[3] = "3600"; cmd(3, a)
			split("", a); a[1] = "SADD"; a[2] = "mqtt:index:msg"; a[3] = topic; cmd(3, a)
		}
	}' >"$MIX_FILE"
}

run_limit_mix() { # rep
	local rep=$1 dir=$TMP/limit-mix-$1 row=limit-mix
	mkdir -p "$dir"
	make_mix
	cat "$MIX_FILE" >/dev/null # in the page cache
	if ! start_redis "$dir"; then
		add_note $row redis-start-failed
		echo -e "$row\t$rep\tredis-server did not start" >>"$RUNLOG"
		return
	fi
	local c0 c1 t0 t1 out rc
	c0=$(cpu_s "$REDIS_PID") t0=$(now)
	out=$("$REDIS_CLI" -h 127.0.0.1 -p "$RPORT" --pipe <"$MIX_FILE" 2>&1)
	rc=$?
	c1=$(cpu_s "$REDIS_PID") t1=$(now)
	local replies errors c h cs
	replies=$(echo "$out" | sed -n 's/.*replies: \([0-9]*\).*/\1/p')
	errors=$(echo "$out" | sed -n 's/.*errors: \([0-9]*\).*/\1/p')
	c=$(count_msgs) h=$(count_hashes) cs=$(cmdstats)
	stop_redis
	local rate rpct
	rate=$(awk -v n="$c" -v a="$t1" -v b="$t0" 'BEGIN {printf "%.1f", n / (a - b)}')
	rpct=$(awk -v a="$c1" -v b="$c0" -v x="$t1" -v y="$t0" 'BEGIN {printf "%.0f", 100 * (a - b) / (x - y)}')
	if [ "$rc" != 0 ] || [ "${errors:-1}" != 0 ] || [ "$c" != "$MIX_N" ] || [ "$h" != "$MIX_N" ]; then
		add_note $row "errors"
	fi
	add_val $row rows_per_s "$rate"
	add_val $row redis_pct "$rpct"
	add_val $row cmd_us_per_msg "$(awk -v u="${cs#* }" -v n="$c" 'BEGIN {if (n > 0) printf "%.2f", u / n}')"
	add_val $row redis_cpu_per_msg_us "$(awk -v a="$c1" -v b="$c0" -v n="$c" 'BEGIN {if (n > 0) printf "%.2f", 1e6 * (a - b) / n}')"
	local summary
	summary="$(fmt "$rate") msg/s ($c messages, $h hashes, $replies replies, $errors errors in $(sub "$t1" "$t0") s; redis-server $rpct% of a core, $(awk -v a="$c1" -v b="$c0" -v n="$c" 'BEGIN {if (n > 0) printf "%.2f", 1e6 * (a - b) / n}') µs CPU and $(awk -v u="${cs#* }" -v n="$c" 'BEGIN {if (n > 0) printf "%.2f", u / n}') µs inside the commands per message)"
	printf '%s\t%s\t%s\n' "$row" "$rep" "$summary" >>"$RUNLOG"
	log "$row #$rep: $summary"
}

START_TS=$(date -u +%Y-%m-%dT%H:%M:%SZ)
START_S=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "rows: ${ROWS[*]}; $REPEAT repeat(s); warm-up ${WARMUP}s, measured ${DURATION}s"
for rep in $(seq 1 "$REPEAT"); do
	for row in "${ROWS[@]}"; do
		case $row in
		limit) run_limit "$rep" ;;
		limit-mix) run_limit_mix "$rep" ;;
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
verdict() { # ratio threshold
	[ -z "$1" ] && { echo "not measured"; return; }
	[ "$RATE" != 0 ] && { echo "fixed offered load: the target applies to saturation"; return; }
	awk -v r="$1" -v t="$2" 'BEGIN {print ((r >= t) ? "**met**" : "**missed**")}'
}

NONE=$(cell none pub_rate)
LIMIT=$(cell limit rows_per_s)
MIX=$(cell limit-mix rows_per_s)

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUTDIR"
MD=$OUTDIR/redis-$STAMP.md
{
	echo "# keepmq persisted QoS 1 publishing (Redis) — $START_TS"
	echo
	echo "Each cell is the median of $REPEAT run(s); runs alternate between the rows, each with a fresh"
	echo "redis-server (\`--save '' --appendonly no\`) and a fresh broker. keepmq rows: QoS 1,"
	echo "$PUBLISHERS publishers → 1 subscriber (bench/#), $PAYLOAD-byte payloads, $WINDOW unacknowledged"
	echo "PUBLISHes per publisher, offered load: $([ "$RATE" = 0 ] && echo "as much as flow control allows" || echo "$RATE msg/s in total");"
	echo "msg/s acked = PUBLISHes acknowledged per second in the measured window. Persisted msg/s ="
	echo "messages in Redis (sum of ZCARD of the topic sets) / (load start → the last one stored)."
	echo "Redis CPU = redis-server's CPU over that time, % of one core; µs/msg = its CPU per message"
	echo "and, of that, the time inside the commands (INFO commandstats)."
	echo
	echo "| Row | What | msg/s acked | Persisted msg/s | Backlog when the load stopped | Drain s | stored = acked | Broker CPU % | Redis CPU % | Redis µs/msg (CPU / in commands) |"
	echo "|---|---|---:|---:|---:|---:|---|---:|---:|---:|"
	has none && echo "| none | keepmq, no backend | $(with_note "$NONE" none) | – | – | – | – | $(fmti "$(cell none cpu_pct)") | – | – |"
	for m in async async-p4 async-p2 sync sync-p4 sync-p2; do
		has $m || continue
		echo "| $m | keepmq + Redis, on_message_publish, delivery_mode = $(mode_of $m), pool_size $(pool_size $m) | $(with_note "$(cell $m pub_rate)" $m) | $(fmt "$(cell $m persisted_rate)") | $(fmti "$(cell $m backlog)") | $(fmt "$(cell $m drain_s)") | $(echo ${VAL["$m|rows_ok"]:-} | wc -w)/$REPEAT runs | $(fmti "$(cell $m cpu_pct)") | $(fmti "$(cell $m redis_pct)") | $(fmt "$(cell $m redis_cpu_per_msg_us)") / $(fmt "$(cell $m cmd_us_per_msg)") |"
	done
	has limit && echo "| limit | redis-benchmark -P 64 -c 10, the 6 commands one by one: 1 / Σ(1 / r_i) | $(with_note "$LIMIT" limit) | – | – | – | – | – | – | – |"
	has limit-mix && echo "| limit-mix | redis-cli --pipe, the exact 6-command stream of $MIX_N messages | $(with_note "$MIX" limit-mix) | – | – | – | – | – | $(fmti "$(cell limit-mix redis_pct)") | $(fmt "$(cell limit-mix redis_cpu_per_msg_us)") / $(fmt "$(cell limit-mix cmd_us_per_msg)") |"
	echo
	if has limit; then
		echo "The limit's invocations (median requests/s of the repeats; redis-server's CPU during each, % of a"
		echo "core; µs per call inside the command from INFO commandstats):"
		echo
		echo "| Command | requests/s | redis-server CPU % | µs per call |"
		echo "|---|---:|---:|---:|"
		for spec in "${LIMIT_CMDS[@]}"; do
			name=${spec%%|*}
			echo "| $name | $(fmti "$(cell "limit:$name" rps)") | $(fmti "$(cell "limit:$name" redis_pct)") | $(fmt "$(cell "limit:$name" usec_per_call)") |"
		done
		echo
	fi
	echo "| Ratio | Value | Target | |"
	echo "|---|---:|---|---|"
	r=$(ratio "$(cell async persisted_rate)" "$LIMIT")
	echo "| async persisted / limit | ${r:-n/a} | ≥ 0.50 (half of the redis-benchmark limit) | $(verdict "$r" 0.50) |"
	r=$(ratio "$(cell sync persisted_rate)" "$LIMIT")
	echo "| sync persisted / limit | ${r:-n/a} | – | |"
	r=$(ratio "$(cell async pub_rate)" "$NONE")
	echo "| async acked / none | ${r:-n/a} | – | |"
	r=$(ratio "$(cell sync pub_rate)" "$NONE")
	echo "| sync acked / none | ${r:-n/a} | – | |"
	for m in async-p4 async-p2 sync-p4 sync-p2; do
		has $m || continue
		r=$(ratio "$(cell $m persisted_rate)" "$LIMIT")
		echo "| $m persisted / limit | ${r:-n/a} | – | |"
	done
	for m in async sync; do
		r=$(ratio "$(cell $m persisted_rate)" "$MIX")
		echo "| $m persisted / limit-mix | ${r:-n/a} | – | |"
	done
	r=$(ratio "$MIX" "$LIMIT")
	echo "| limit-mix / limit | ${r:-n/a} | – | |"
	echo
	echo "Median latency (publisher → subscriber, not the PUBACK): none p50 $(fmt "$(cell none lat_p50_us)") µs /"
	echo "p99 $(fmt "$(cell none lat_p99_us)"), async $(fmt "$(cell async lat_p50_us)") / $(fmt "$(cell async lat_p99_us)"),"
	echo "sync $(fmt "$(cell sync lat_p50_us)") / $(fmt "$(cell sync lat_p99_us)"). Peak broker RSS (MiB): none $(fmt "$(cell none hwm_mb)"), async $(fmt "$(cell async hwm_mb)"), sync $(fmt "$(cell sync hwm_mb)")."
	echo "Median seconds the broker's threads waited for a CPU during the load: none $(fmt "$(cell none cpu_wait)"),"
	echo "async $(fmt "$(cell async cpu_wait)"), sync $(fmt "$(cell sync cpu_wait)")."
	echo
	echo "## Machine"
	echo
	echo "- CPUs: $(nproc) ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo))"
	echo "- Memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
	echo "- Kernel: $(uname -srm)"
	echo "- Redis: $("$REDIS_SERVER" --version | head -1)"
	echo "- keepmq: $KEEPMQ_BIN, built $(date -u -r "$KEEPMQ_BIN" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo '?') (source tree at the end of the run: $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'), HEAD committed $(cd "$ROOT" && git log -1 --format=%cd --date=iso-strict 2>/dev/null || echo '?'))"
	echo "- Load average before the run: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg); wall time ${ELAPSED}s"
	echo
	echo "## Commands"
	echo
	echo "- Invocation: \`bench/redis.sh${ORIG_ARGS[*]:+ ${ORIG_ARGS[*]}}\`"
	echo "- redis-server: \`redis-server --bind 127.0.0.1 --port \$RPORT --save '' --appendonly no --dir \$RUN_DIR\`"
	echo "- keepmq rows: \`keepmq -c keepmq.conf\` (in the run's temp directory), then"
	echo "  \`keepmq-loadgen ${LG_ARGS[*]} --port \$PORT --json\`"
	d=$(mktemp -d "$TMP/conf.XXXX")
	echo "- keepmq.conf for async (sync: \`delivery_mode = sync\`; -p4/-p2: \`pool_size = 4\`/\`2\`; none: the first two lines only):"
	echo
	echo '```'
	write_conf async '$PORT' '$RPORT' "$d" | xargs cat
	echo '```'
	echo
	echo "- Messages counted with \`redis-cli EVAL \"$COUNT_LUA\" 0\`; hashes = DBSIZE − SCARD mqtt:index:msg − 1."
	echo "- limit: one redis-server; untimed first: \`redis-cli EVAL \"<create $LIMIT_N hashes mqtt:msg:${Q20}%012d>\" 0\`; then, in order,"
	echo "  \`redis-benchmark -h 127.0.0.1 -p \$RPORT -P 64 -c 10 -n $LIMIT_N [-r R] -q <command>\` with"
	echo
	for spec in "${LIMIT_CMDS[@]}"; do
		ropt=${spec#*|} ropt=${ropt%%|*}
		echo "  - \`${ropt:+$ropt }${spec##*|}\`"
	done
	echo
	echo "  limit = 1 / Σ 1/r_i over the six requests/s r_i."
	echo "- limit-mix: \`redis-cli -h 127.0.0.1 -p \$RPORT --pipe < mix.resp\`, mix.resp = for message m = 0 … $((MIX_N - 1)):"
	echo "  publisher p = ⌊m / $WINDOW⌋ mod $PUBLISHERS, id = \`01a234d1\` + m as 12 hex digits + p as 12 decimal digits, topic \`bench/p\`,"
	echo "  the 6 commands exactly as the broker sends them (from \`$PREFIX-p<p>\`, payload $PAYLOAD bytes, ts 1700000000, trim bound \`($FLOOR\`);"
	echo "  rate = messages / time of the redis-cli process."
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
