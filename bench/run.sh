#!/usr/bin/env bash
# run.sh - keepmq vs mosquitto, side by side, in one run.
#
# Design
# ------
# Every measurement gets a freshly started broker (own temp config, fresh
# free port) so no run inherits another's heap, queues or sockets, and the
# idle-memory rows really start from a clean process. Runs alternate between
# the brokers (keepmq, mosquitto, keepmq, mosquitto, ... --repeat times) so
# slow drift of this shared machine hits both alike; each cell is the median
# of its repeats. The load generator (bench/loadgen) prints one flat JSON
# object per run; this script only picks fields out of it with sed, so it
# needs nothing beyond bash, coreutils, awk and iproute2's ss.
#
# keepmq is optional: if $KEEPMQ_BIN is missing, exits, or is not listening
# within 5 s of being started with the config this script writes, its
# columns read "n/a" and the run goes on with mosquitto alone.
#
# Usage: bench/run.sh [--quick] [--only REGEX] [--repeat R] [--pin [B:L]]
#                     [--duration S] [--warmup S] [--protocol 4|5] [--list]
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KEEPMQ_BIN=${KEEPMQ_BIN:-$ROOT/build/keepmq}
LOADGEN=${LOADGEN:-$ROOT/build-bench/keepmq-loadgen}
MOSQUITTO=${MOSQUITTO:-mosquitto}
OUTDIR=$ROOT/bench/results
REPEAT=3
QUICK=0
ONLY=""
PIN=""
DURATION=""
WARMUP=""
PROTOCOL=4
BUILD=1
LIST=0
ORIG_ARGS=("$@")

# Fixed offered load for the latency rows, in deliveries per second (the same
# for both brokers, and well below what either sustains here, so the numbers
# are service latency rather than queueing in front of a saturated broker).
LAT_RATE_SMALL=2000
LAT_RATE_LARGE=1000
WINDOW=64 # loadgen --window; mosquitto's max_inflight_messages matches it

usage() {
	sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'
	cat <<'EOF'
Options:
  --quick          reduced set, short runs, one repeat (smoke test)
  --only REGEX     run only rows whose id matches (see --list)
  --repeat R       runs per broker per row, median reported (3; quick: 1)
  --pin [B:L]      taskset brokers to CPUs B and the load generator to L
                   (default 0:1); not pinned unless given
  --duration S     measured seconds per throughput run (5; quick: 2)
  --warmup S       warm-up seconds per run (1; quick: 0.5)
  --protocol 4|5   MQTT 3.1.1 (default) or 5
  --no-build       do not (re)build the load generator
  --list           print the row ids and exit
Environment: KEEPMQ_BIN (default build/keepmq), LOADGEN, MOSQUITTO.
EOF
}

while [ $# -gt 0 ]; do
	case "$1" in
	--quick) QUICK=1 ;;
	--only) ONLY=$2; shift ;;
	--repeat) REPEAT=$2; shift ;;
	--pin)
		PIN=0:1
		if [ $# -gt 1 ] && [[ $2 =~ ^[0-9,-]+:[0-9,-]+$ ]]; then PIN=$2; shift; fi ;;
	--duration) DURATION=$2; shift ;;
	--warmup) WARMUP=$2; shift ;;
	--protocol) PROTOCOL=$2; shift ;;
	--no-build) BUILD=0 ;;
	--list) LIST=1 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done

if [ "$QUICK" = 1 ]; then
	: "${DURATION:=2}" "${WARMUP:=0.5}"
	[[ " ${ORIG_ARGS[*]} " == *" --repeat "* ]] || REPEAT=1
	CONNRATE_COUNT=5000
	LAT_DURATION=2
	IDLE_HOLD=3
else
	: "${DURATION:=5}" "${WARMUP:=1}"
	CONNRATE_COUNT=20000
	LAT_DURATION=3
	IDLE_HOLD=4
fi

# ---------------------------------------------------------------- rows
# id|kind|args...   kind: tput/lat (pubsub), idle N, connrate
ROWS=()
topo_args() { # topology -> loadgen arguments
	case $1 in
	distinct) echo "--topology distinct --publishers 10 --subscribers 10" ;;
	fanin) echo "--topology fanin --publishers 100 --subscribers 1" ;;
	fanout) echo "--topology fanout --publishers 1 --subscribers 1000" ;;
	esac
}
for q in 0 1 2; do
	for size in 64 16384; do
		for t in distinct fanin fanout; do
			label=$([ "$size" = 64 ] && echo 64B || echo 16KiB)
			ROWS+=("q$q-$t-$label-tput|tput|$q|$t|$size")
			ROWS+=("q$q-$t-$label-lat|lat|$q|$t|$size")
		done
	done
done
# 19,000: the most this kind of machine allows (its open-files hard limit is
# 20,000, and raising it needs a capability the container lacks); 50,000 runs
# wherever the limit allows and is reported as skipped elsewhere.
ROWS+=("mem-idle-10k|idle|10000" "mem-idle-19k|idle|19000" "mem-idle-50k|idle|50000" "connrate|connrate|$CONNRATE_COUNT")

quick_row() {
	case $1 in
	q?-*-64B-tput | q?-distinct-64B-lat | mem-idle-10k | connrate) return 0 ;;
	*) return 1 ;;
	esac
}
SELECTED=()
for r in "${ROWS[@]}"; do
	id=${r%%|*}
	[ "$QUICK" = 1 ] && ! quick_row "$id" && continue
	[ -n "$ONLY" ] && ! [[ $id =~ $ONLY ]] && continue
	SELECTED+=("$r")
done
if [ "$LIST" = 1 ]; then
	for r in "${SELECTED[@]}"; do echo "${r%%|*}"; done
	exit 0
fi
if [ ${#SELECTED[@]} -eq 0 ]; then
	echo "run.sh: no rows selected" >&2
	exit 2
fi

# ---------------------------------------------------------------- setup
log() { echo "run.sh: $*" >&2; }

if [ "$BUILD" = 1 ]; then
	log "building the load generator in build-bench/"
	if ! { cmake -S "$ROOT" -B "$ROOT/build-bench" -DKEEPMQ_TESTS=OFF >/dev/null &&
		cmake --build "$ROOT/build-bench" --target keepmq-loadgen -j"$(nproc)" >/dev/null; }; then
		log "build failed"
		exit 1
	fi
fi
[ -x "$LOADGEN" ] || { log "no load generator at $LOADGEN"; exit 1; }
command -v "$MOSQUITTO" >/dev/null || { log "mosquitto not found"; exit 1; }

# Idle rows need one descriptor per connection in both processes.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)

TMP=$(mktemp -d /tmp/keepmq-bench.XXXXXX)
BROKER_PID=""
LG_PID=""
cleanup() {
	[ -n "$LG_PID" ] && kill "$LG_PID" 2>/dev/null
	[ -n "$BROKER_PID" ] && kill -9 "$BROKER_PID" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BROKER_TASKSET=()
LG_TASKSET=()
# A wedged broker must not wedge the whole run: the load generator has its
# own timeouts, this is the backstop.
LG_TIMEOUT=()
command -v timeout >/dev/null && LG_TIMEOUT=(timeout -k 5 600)
if [ -n "$PIN" ]; then
	command -v taskset >/dev/null || { log "--pin needs taskset"; exit 1; }
	BROKER_TASKSET=(taskset -c "${PIN%%:*}")
	LG_TASKSET=(taskset -c "${PIN##*:}")
fi

is_listening() { # port
	if command -v ss >/dev/null; then
		ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
	else
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
	fi
}

write_conf() { # broker port -> config path
	local f=$TMP/$1.conf
	if [ "$1" = mosquitto ]; then
		cat >"$f" <<EOF
listener $2 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
max_queued_messages 1000000
max_inflight_messages $WINDOW
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
EOF
	else
		cat >"$f" <<EOF
listener.tcp.default = 127.0.0.1:$2
log.level = warning
EOF
	fi
	echo "$f"
}

# Starts a broker on a fresh port: sets PORT and BROKER_PID, returns 1 on failure.
start_broker() { # name
	PORT=$("$LOADGEN" freeport) || return 1
	local conf
	conf=$(write_conf "$1" "$PORT")
	local bin=$MOSQUITTO
	[ "$1" = keepmq ] && bin=$KEEPMQ_BIN
	"${BROKER_TASKSET[@]}" "$bin" -c "$conf" >>"$TMP/$1.log" 2>&1 &
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
	for i in $(seq 1 50); do
		kill -0 "$BROKER_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$BROKER_PID" 2>/dev/null
	wait "$BROKER_PID" 2>/dev/null
	BROKER_PID=""
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# Field of a flat JSON object.
jget() { # file key
	sed -n "s/.*\"$2\":\(\"[^\"]*\"\|[^,}]*\).*/\1/p" "$1" | tr -d '"'
}

BROKERS=(keepmq mosquitto)
KEEPMQ_OK=1
KEEPMQ_WHY=""
if [ ! -x "$KEEPMQ_BIN" ]; then
	KEEPMQ_OK=0
	KEEPMQ_WHY="no executable at $KEEPMQ_BIN"
elif ! start_broker keepmq; then
	KEEPMQ_OK=0
	KEEPMQ_WHY="\`$KEEPMQ_BIN -c <conf>\` exited or was not listening within 5 s"
else
	stop_broker
fi
if [ "$KEEPMQ_OK" = 0 ]; then
	log "keepmq skipped: $KEEPMQ_WHY; running mosquitto only"
	[ -f "$TMP/keepmq.log" ] && head -5 "$TMP/keepmq.log" | sed 's/^/run.sh:   keepmq: /' >&2
	BROKERS=(mosquitto)
fi
if ! start_broker mosquitto; then
	log "mosquitto does not start; see $TMP/mosquitto.log"
	cat "$TMP/mosquitto.log" >&2
	exit 1
fi
stop_broker

# ---------------------------------------------------------------- runs
declare -A VAL  # "row|broker|metric" -> space-separated values of the repeats
declare -A NOTE # "row|broker" -> warnings (loss, errors)
declare -A CMD  # row -> loadgen command (port elided)
declare -A DESC # row -> human description
RUNLOG=$TMP/runs.tsv
: >"$RUNLOG"

add_val() { VAL["$1|$2|$3"]="${VAL["$1|$2|$3"]:-} $4"; }
add_note() {
	case " ${NOTE["$1|$2"]:-} " in *" $3 "*) ;; *) NOTE["$1|$2"]="${NOTE["$1|$2"]:-} $3" ;; esac
}

describe() { # id kind args...
	local id=$1 kind=$2
	case $kind in
	tput | lat)
		local q=$3 t=$4 size=$5 shape
		case $t in
		distinct) shape="10 pub → 10 sub, distinct topics" ;;
		fanin) shape="100 pub → 1 sub, fan-in (bench/#)" ;;
		fanout) shape="1 pub → 1000 sub, fan-out" ;;
		esac
		echo "QoS $q, $shape, $([ "$size" = 64 ] && echo "64 B" || echo "16 KiB")" ;;
	idle) echo "memory per idle connection, $3 connections" ;;
	connrate) echo "connection setup: connect+CONNECT+CONNACK+DISCONNECT, $3 cycles, 32 at once" ;;
	esac
}

median() { # values...
	printf '%s\n' "$@" | grep -E '^-?[0-9.]+$' | sort -g |
		awk '{v[NR] = $1} END {if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
fmt() { # number -> rounded for the table
	[ -z "$1" ] && { echo "n/a"; return; }
	awk -v x="$1" 'BEGIN {
		if (x >= 100) printf "%.0f", x; else if (x >= 10) printf "%.1f", x; else printf "%.2f", x }'
}
# Runs one measurement of row $1 against broker $2 (repeat $3).
run_one() {
	local row=$1 broker=$2 rep=$3
	local id kind a1 a2 a3
	IFS='|' read -r id kind a1 a2 a3 <<<"$row"
	local out=$TMP/$id-$broker-$rep.json
	if ! start_broker "$broker"; then
		add_note "$id" "$broker" "start-failed"
		log "$id $broker: broker did not start"
		return
	fi
	local common=(--port "$PORT" --protocol "$PROTOCOL" --json)
	local args=() summary=""
	case $kind in
	tput)
		args=(pubsub $(topo_args "$a2") --qos "$a1" --payload "$a3" --warmup "$WARMUP"
			--duration "$DURATION" --window "$WINDOW")
		;;
	lat)
		local deliveries=$LAT_RATE_SMALL rate
		[ "$a3" -gt 1024 ] && deliveries=$LAT_RATE_LARGE
		rate=$deliveries
		[ "$a2" = fanout ] && rate=$(awk -v d="$deliveries" 'BEGIN {print d / 1000}')
		args=(pubsub $(topo_args "$a2") --qos "$a1" --payload "$a3" --warmup 0.5
			--duration "$LAT_DURATION" --window "$WINDOW" --rate "$rate")
		;;
	idle)
		args=(idle --connections "$a1" --hold "$IDLE_HOLD" --ready-file "$TMP/ready")
		;;
	connrate)
		args=(connrate --count "$a1" --concurrency 32)
		;;
	esac
	CMD[$id]="${LG_TASKSET[*]:+${LG_TASKSET[*]} }keepmq-loadgen ${args[*]} --port \$PORT --protocol $PROTOCOL --json"
	CMD[$id]=${CMD[$id]//$TMP\/ready/\$READY_FILE}

	if [ "$kind" = idle ]; then
		if [ "$NOFILE" -lt $((a1 + 100)) ]; then
			add_note "$id" "$broker" "skipped:RLIMIT_NOFILE=$NOFILE"
			log "$id $broker: skipped, RLIMIT_NOFILE is $NOFILE (hard limit $(ulimit -Hn)); needs $((a1 + 100))"
			stop_broker
			return
		fi
		rm -f "$TMP/ready"
		sleep 0.5
		local rss0 rss1=0 lgrss=0 s i
		rss0=$(rss_kb "$BROKER_PID")
		"${LG_TIMEOUT[@]}" "${LG_TASKSET[@]}" "$LOADGEN" "${args[@]}" "${common[@]}" >"$out" 2>>"$TMP/loadgen.log" &
		LG_PID=$!
		for i in $(seq 1 1200); do
			[ -s "$TMP/ready" ] && break
			kill -0 "$LG_PID" 2>/dev/null || break
			sleep 0.1
		done
		if [ -s "$TMP/ready" ]; then
			# Let the broker finish per-connection work, then take the peak
			# of a few samples.
			sleep 1
			for i in 1 2 3; do
				s=$(rss_kb "$BROKER_PID")
				[ "${s:-0}" -gt "$rss1" ] && rss1=$s
				sleep 0.3
			done
			# LG_PID may be the `timeout` wrapper; measure its child.
			local lgp
			lgp=$(pgrep -P "$LG_PID" 2>/dev/null | head -1)
			lgrss=$(rss_kb "${lgp:-$LG_PID}")
		fi
		wait "$LG_PID"
		LG_PID=""
		local connected
		connected=$(jget "$out" connected)
		if [ -n "$connected" ] && [ "$connected" -gt 0 ] && [ "$rss1" -gt 0 ]; then
			local per
			per=$(awk -v a="$rss0" -v b="$rss1" -v n="$connected" 'BEGIN {printf "%.0f", (b - a) * 1024 / n}')
			add_val "$id" "$broker" mem "$per"
			add_val "$id" "$broker" rss0 "$rss0"
			add_val "$id" "$broker" rss1 "$rss1"
			add_val "$id" "$broker" lgrss "$lgrss"
			summary="$per B/conn (RSS $rss0 → $rss1 KiB, $connected connected; loadgen's own RSS $lgrss KiB not counted)"
			[ "$connected" != "$a1" ] && add_note "$id" "$broker" "only-$connected-connected"
		else
			add_note "$id" "$broker" "failed"
			summary="failed: $(jget "$out" first_error)"
		fi
	else
		"${LG_TIMEOUT[@]}" "${LG_TASKSET[@]}" "$LOADGEN" "${args[@]}" "${common[@]}" >"$out" 2>>"$TMP/loadgen.log"
		local rc=$?
		if [ ! -s "$out" ]; then
			add_note "$id" "$broker" "failed"
			summary="failed (exit $rc, no output)"
		elif [ "$kind" = connrate ]; then
			add_val "$id" "$broker" rate "$(jget "$out" conn_rate)"
			add_val "$id" "$broker" p50 "$(jget "$out" setup_p50_us)"
			add_val "$id" "$broker" p99 "$(jget "$out" setup_p99_us)"
			[ "$(jget "$out" failed)" != 0 ] && add_note "$id" "$broker" "failed-cycles"
			summary="$(fmt "$(jget "$out" conn_rate)") conn/s, setup p50 $(fmt "$(jget "$out" setup_p50_us)") µs, p99 $(fmt "$(jget "$out" setup_p99_us)") µs, failed $(jget "$out" failed)"
		else
			local k
			for k in recv_rate pub_rate lat_p50_us lat_p90_us lat_p99_us lat_max_us lost lost_pct dup errors; do
				add_val "$id" "$broker" "$k" "$(jget "$out" "$k")"
			done
			local lost dup errs
			lost=$(jget "$out" lost) dup=$(jget "$out" dup) errs=$(jget "$out" errors)
			[ "${dup:-0}" != 0 ] && add_note "$id" "$broker" "DUP"
			[ "${errs:-0}" != 0 ] && add_note "$id" "$broker" "errors"
			[ "$rc" != 0 ] && add_note "$id" "$broker" "exit-$rc"
			if [ "${lost:-0}" != 0 ]; then
				if [ "$a1" = 0 ]; then add_note "$id" "$broker" "qos0-loss"; else add_note "$id" "$broker" "LOSS"; fi
			fi
			summary="$(fmt "$(jget "$out" recv_rate)") msg/s received ($(fmt "$(jget "$out" pub_rate)") published), latency p50 $(fmt "$(jget "$out" lat_p50_us)") µs, p99 $(fmt "$(jget "$out" lat_p99_us)") µs, max $(fmt "$(jget "$out" lat_max_us)") µs, lost $lost, dup $dup, errors $errs"
			[ "${errs:-0}" != 0 ] && summary="$summary ($(jget "$out" first_error))"
		fi
	fi
	printf '%s\t%s\t%s\t%s\n' "$id" "$broker" "$rep" "$summary" >>"$RUNLOG"
	log "[$RUN_N/$RUN_TOTAL] $id $broker #$rep: $summary"
	stop_broker
}

RUN_TOTAL=$((${#SELECTED[@]} * ${#BROKERS[@]} * REPEAT))
RUN_N=0
START_TS=$(date -u +%Y-%m-%dT%H:%M:%SZ)
START_S=$(date +%s)
log "$((${#SELECTED[@]})) rows × ${#BROKERS[@]} broker(s) × $REPEAT repeat(s) = $RUN_TOTAL runs"
for row in "${SELECTED[@]}"; do
	IFS='|' read -r id kind a1 a2 a3 <<<"$row"
	DESC[$id]=$(describe "$id" "$kind" "$a1" "$a2" "$a3")
	for rep in $(seq 1 "$REPEAT"); do
		for broker in "${BROKERS[@]}"; do
			RUN_N=$((RUN_N + 1))
			run_one "$row" "$broker" "$rep"
		done
	done
done
ELAPSED=$(($(date +%s) - START_S))

# ---------------------------------------------------------------- report
cell() { # row broker metric
	local v
	# shellcheck disable=SC2086
	v=$(median ${VAL["$1|$2|$3"]:-})
	echo "$v"
}

# row-id metric-key label better(higher|lower)
declare -a TABLE=()
for row in "${SELECTED[@]}"; do
	IFS='|' read -r id kind a1 a2 a3 <<<"$row"
	case $kind in
	tput) TABLE+=("$id|recv_rate|throughput, msg/s received|higher") ;;
	lat)
		local_rate=$LAT_RATE_SMALL
		[ "$a3" -gt 1024 ] && local_rate=$LAT_RATE_LARGE
		TABLE+=("$id|lat_p50_us|latency p50, µs at $local_rate deliveries/s|lower")
		TABLE+=("$id|lat_p99_us|latency p99, µs at $local_rate deliveries/s|lower")
		;;
	idle) TABLE+=("$id|mem|bytes of broker RSS per idle connection|lower") ;;
	connrate)
		TABLE+=("$id|rate|connections/s|higher")
		TABLE+=("$id|p99|setup latency p99, µs|lower")
		;;
	esac
done

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUTDIR"
MD=$OUTDIR/$STAMP.md
{
	echo "# keepmq vs mosquitto — $START_TS"
	echo
	echo "Ratio = keepmq / mosquitto. **Throughput and connections/s: higher is better. Latency and memory: lower is better.**"
	echo "Each cell is the median of $REPEAT run(s) per broker; runs alternate between the brokers"
	echo "(each run on a freshly started broker). Notes: LOSS/DUP = lost or duplicated messages at"
	echo "QoS 1/2 (a correctness problem); qos0-loss = messages dropped at QoS 0 (allowed, reported)."
	echo
	echo "| Row | Scenario | Metric | keepmq | mosquitto | keepmq/mosquitto | Better |"
	echo "|---|---|---|---:|---:|---:|---|"
	for t in "${TABLE[@]}"; do
		IFS='|' read -r id key label better <<<"$t"
		k=$(cell "$id" keepmq "$key")
		m=$(cell "$id" mosquitto "$key")
		ratio="n/a"
		if [ -n "$k" ] && [ -n "$m" ]; then
			ratio=$(awk -v a="$k" -v b="$m" 'BEGIN {if (b == 0) print "n/a"; else printf "%.2f", a / b}')
		fi
		kc=$(fmt "$k")
		mc=$(fmt "$m")
		[ -n "${NOTE["$id|keepmq"]:-}" ] && kc="$kc (${NOTE["$id|keepmq"]# })"
		[ -n "${NOTE["$id|mosquitto"]:-}" ] && mc="$mc (${NOTE["$id|mosquitto"]# })"
		[ "$KEEPMQ_OK" = 0 ] && kc="n/a"
		echo "| $id | ${DESC[$id]} | $label | $kc | $mc | $ratio | $better |"
	done
	echo
	echo "## Machine"
	echo
	echo "- CPUs: $(nproc) ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo))"
	echo "- Memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
	echo "- Kernel: $(uname -srm)"
	echo "- mosquitto: $("$MOSQUITTO" -h 2>&1 | head -1)"
	if [ "$KEEPMQ_OK" = 1 ]; then
		echo "- keepmq: $KEEPMQ_BIN (source tree $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo '?'); the binary is whatever was last built there)"
	else
		echo "- keepmq: **not run** — $KEEPMQ_WHY"
	fi
	echo "- libuv (load generator): $(pkg-config --modversion libuv 2>/dev/null || echo '?')"
	echo "- RLIMIT_NOFILE: $NOFILE (hard $(ulimit -Hn))"
	echo "- Pinning: $([ -n "$PIN" ] && echo "brokers on CPUs ${PIN%%:*}, load generator on ${PIN##*:}" || echo "none (broker and load generator share all CPUs)")"
	echo "- Wall time of the run: ${ELAPSED}s"
	echo
	echo "## Settings and commands"
	echo
	echo "- Invocation: \`bench/run.sh${ORIG_ARGS[*]:+ ${ORIG_ARGS[*]}}\`"
	echo "- Throughput runs: warm-up ${WARMUP}s, measured ${DURATION}s, publisher window $WINDOW unacked (QoS>0),"
	echo "  end-to-end backlog bounded by the load generator's default (about 1024 deliveries in flight)."
	echo "- Latency runs: fixed offered load ($LAT_RATE_SMALL deliveries/s for 64 B, $LAT_RATE_LARGE for 16 KiB), warm-up 0.5s, measured ${LAT_DURATION}s."
	echo "- Memory rows: (VmRSS of the broker with N idle connections − VmRSS of the fresh broker) / N;"
	echo "  the load generator is a separate process and its memory is not counted."
	echo "- mosquitto: \`${BROKER_TASKSET[*]:+${BROKER_TASKSET[*]} }$MOSQUITTO -c mosquitto.conf\` with"
	echo
	echo '```'
	write_conf mosquitto '$PORT' | xargs cat
	echo '```'
	echo
	echo "- keepmq: \`${BROKER_TASKSET[*]:+${BROKER_TASKSET[*]} }\$KEEPMQ_BIN -c keepmq.conf\` with"
	echo
	echo '```'
	write_conf keepmq '$PORT' | xargs cat
	echo '```'
	echo
	echo "- Load generator per row (\$PORT: the broker's fresh port for that run):"
	echo
	for row in "${SELECTED[@]}"; do
		id=${row%%|*}
		[ -n "${CMD[$id]:-}" ] && echo "  - \`$id\`: \`${CMD[$id]}\`"
	done
	echo
	echo "## Every run"
	echo
	echo "| Row | Broker | # | Result |"
	echo "|---|---|---:|---|"
	while IFS=$'\t' read -r id broker rep summary; do
		echo "| $id | $broker | $rep | $summary |"
	done <"$RUNLOG"
	echo
	echo "Throughput runs also report latency, but at saturation it mostly reflects the bounded"
	echo "backlog divided by the throughput; the latency rows above use a fixed offered load instead."
} >"$MD"

cat "$MD"
log "results written to $MD"
