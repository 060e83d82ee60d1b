# shellcheck shell=bash
# lib.sh - helpers shared by the benchmark drivers (sourced, not run).
#
# bench/sqlserver.sh uses it; bench/run.sh, bench/persist.sh and
# bench/redis.sh still carry their own copies of most of these.
#
# The sourcing script sets LIB_NAME (its name, for log lines) and, for the
# broker helpers, KEEPMQ_BIN and LOADGEN. Needs bash, coreutils, awk and ss
# (iproute2).

LIB_NAME=${LIB_NAME:-bench}
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

log() { echo "$LIB_NAME: $*" >&2; }

# ------------------------------------------------------------ numbers, time
now() { date +%s.%N; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a - b}'; }
# a / b with 2 decimals, empty if either is empty or b is 0
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print ""; else printf "%.2f", a / b}'; }
# Median of the numeric arguments (others ignored); empty if none.
median() {
	printf '%s\n' "$@" | grep -E '^-?[0-9.]+$' | sort -g |
		awk '{v[NR] = $1} END {if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
fmti() {
	[ -z "$1" ] && { echo "n/a"; return; }
	awk -v x="$1" 'BEGIN {printf "%.0f", x}'
}
fmt() {
	[ -z "$1" ] && { echo "n/a"; return; }
	awk -v x="$1" 'BEGIN {if (x >= 100 || x <= -100) printf "%.0f", x; else if (x >= 10 || x <= -10) printf "%.1f", x; else printf "%.2f", x}'
}

# ------------------------------------------------- results of repeated runs
# VAL["key|metric"] holds the values of the repeats, NOTE[key] flags.
declare -A VAL
declare -A NOTE
add_val() { [ -n "$3" ] && VAL["$1|$2"]="${VAL["$1|$2"]:-} $3"; }
add_note() { case " ${NOTE[$1]:-} " in *" $2 "*) ;; *) NOTE[$1]="${NOTE[$1]:-} $2" ;; esac; }
vals() { echo ${VAL["$1|$2"]:-}; }
# shellcheck disable=SC2086 # the repeats' values, split on purpose
cell() { median ${VAL["$1|$2"]:-}; }
nvals() { echo ${VAL["$1|$2"]:-} | wc -w; }

# ---------------------------------------------------------------- processes
is_listening() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
# Field of a flat JSON object in a file.
jget() { sed -n "s/.*\"$2\":\(\"[^\"]*\"\|[^,}]*\).*/\1/p" "$1" | tr -d '"'; }
# CPU seconds (user + system) of a process (all its threads).
cpu_s() {
	awk -v t="$CLK_TCK" '{sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t}' "/proc/$1/stat" 2>/dev/null
}
ticks() { awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null; }
# CPU seconds of a process tree's root, its waited-for children (cutime,
# cstime) and its live children: a PostgreSQL postmaster and its backends.
tree_cpu_s() {
	cat /proc/[0-9]*/stat 2>/dev/null | awk -v r="$1" -v t="$CLK_TCK" '
		{pid = $1; sub(/^.*\) /, "")
		 if (pid == r) s += $12 + $13 + $14 + $15; else if ($2 == r) s += $12 + $13}
		END {printf "%.2f", s / t}'
}
# "cpu cpu ..." of a process's threads in creation order (tids grow).
thread_cpu() {
	local f
	for f in /proc/"$1"/task/*/stat; do
		awk -v t="$CLK_TCK" '{tid = $1; sub(/^.*\) /, ""); printf "%d %.2f\n", tid, ($12 + $13) / t}' "$f" 2>/dev/null
	done | sort -n | awk '{printf "%s%s", (NR > 1 ? " " : ""), $2}'
}
# Seconds a process's threads waited for a CPU (schedstat).
run_delay_s() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s += $2} END {printf "%.2f", s / 1e9}'; }
hwm_mb() { awk '/^VmHWM:/ {printf "%.0f", $2 / 1024}' "/proc/$1/status" 2>/dev/null; }
# Waits until a CPU-time counter stays put: at most $3 more in each of
# 3 polls of 0.2 s in a row, for at most $2 seconds. $1 is a command
# printing the counter (ticks PID, or a tree's).
wait_quiet() { # cmd timeout_s max_ticks
	local last cur idle=0 n _
	n=$(awk -v t="$2" 'BEGIN {printf "%d", t / 0.2}')
	last=$($1)
	for _ in $(seq 1 "$n"); do
		sleep 0.2
		cur=$($1)
		[ -z "$cur" ] && return 0
		if awk -v a="$cur" -v b="$last" -v m="${3:-1}" 'BEGIN {exit !(a - b <= m)}'; then
			idle=$((idle + 1))
			[ "$idle" -ge 3 ] && return 0
		else
			idle=0
		fi
		last=$cur
	done
	return 1
}
# The machine's CPU jiffies: "busy steal" (busy = user + nice + system,
# all CPUs; not irq and softirq, which no process is charged for) from /proc/stat.
machine_jiffies() { awk '/^cpu / {print $2 + $3 + $4, $9}' /proc/stat; }
# CPU-s between two machine_jiffies outputs: "busy steal"
machine_cpu_s() { # before after
	awk -v a="$1" -v b="$2" -v t="$CLK_TCK" 'BEGIN {split(a, x, " "); split(b, y, " ");
		printf "%.2f %.2f", (y[1] - x[1]) / t, (y[2] - x[2]) / t}'
}
# Waits (at most $2 s) until the whole machine used at most $1 % of one core
# over one second: the other users of a shared machine are quiet. Sets
# QUIET_PCT (the last second's use) and QUIET_WAITED (seconds); 1 on timeout.
wait_machine_quiet() { # max_pct timeout_s
	local t0 j0 j1 c
	t0=$(date +%s)
	while :; do
		j0=$(machine_jiffies)
		sleep 1
		j1=$(machine_jiffies)
		c=$(machine_cpu_s "$j0" "$j1")
		QUIET_PCT=$(awk -v c="${c% *}" 'BEGIN {printf "%.0f", 100 * c}')
		QUIET_WAITED=$(($(date +%s) - t0))
		[ "$QUIET_PCT" -le "$1" ] && return 0
		[ "$QUIET_WAITED" -ge "$2" ] && return 1
	done
}
# Ends a process we started: SIGTERM, up to $2 tenths of a second, SIGKILL.
stop_pid() { # pid [tenths]
	[ -z "$1" ] && return
	kill -TERM "$1" 2>/dev/null
	local _
	for _ in $(seq 1 "${2:-100}"); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}

# ------------------------------------------------------------------- keepmq
# Builds keepmq and keepmq-loadgen in $1 (configures it RelWithDebInfo if
# needed).
build_keepmq() { # build_dir root
	if [ ! -f "$1/CMakeCache.txt" ]; then
		cmake -S "$2" -B "$1" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null ||
			{ log "cmake configure failed"; return 1; }
	fi
	cmake --build "$1" -j2 --target keepmq keepmq-loadgen >/dev/null || { log "build failed"; return 1; }
}
# Starts keepmq with a config file in dir (log to dir/keepmq.log) and waits
# until it listens on port: sets BROKER_PID. 1 if it does not start.
start_keepmq() { # conf dir port
	(cd "$2" && exec "$KEEPMQ_BIN" -c "$1") >>"$2/keepmq.log" 2>&1 &
	BROKER_PID=$!
	local _
	for _ in $(seq 1 50); do
		if ! kill -0 "$BROKER_PID" 2>/dev/null; then
			wait "$BROKER_PID" 2>/dev/null
			BROKER_PID=""
			return 1
		fi
		is_listening "$3" && return 0
		sleep 0.1
	done
	stop_keepmq
	return 1
}
stop_keepmq() { stop_pid "$BROKER_PID" 100; BROKER_PID=""; }
free_port() { "$LOADGEN" freeport; }

# --------------------------------------------------------------- the report
machine_lines() { # -> markdown list items
	echo "- CPUs: $(nproc) ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo))"
	echo "- Memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
	echo "- Kernel: $(uname -srm)"
}
keepmq_line() { # root
	echo "- keepmq: $KEEPMQ_BIN, built $(date -u -r "$KEEPMQ_BIN" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || echo '?') (source tree at the end of the run: $(cd "$1" && git describe --always --dirty 2>/dev/null || echo '?'), HEAD committed $(cd "$1" && git log -1 --format=%cd --date=iso-strict 2>/dev/null || echo '?'))"
}
