#!/usr/bin/env bash
# fuzz.sh BUILD_DIR SECONDS OUT - runs every fuzz_* target in BUILD_DIR for
# SECONDS from its seed corpus (fuzz/corpus/<name>), in a scratch corpus so
# the repository is not modified. A crash, leak or timeout is a failed test;
# the reproducer is kept in OUT/fuzz-artifacts.
set -uo pipefail
dir=$1 secs=$2 out=$3
mkdir -p "$out/fuzz-artifacts"
xml="$out/fuzz.xml"
cases="" fails=0 n=0
for bin in "$dir"/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin"); corpus=fuzz/corpus/${name#fuzz_}
  scratch=$(mktemp -d)
  n=$((n + 1))
  "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$out/fuzz-artifacts/$name-" "$scratch" "$corpus" >"$out/$name.log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/$name.log" | grep -o '[0-9]*$')
  if [ $rc -eq 0 ]; then
    echo "$name: ok, ${execs:-?} executions in ${secs}s"
    cases+="<testcase classname=\"fuzz\" name=\"$name\"/>"
  else
    fails=$((fails + 1))
    echo "$name: FAILED (exit $rc), see $out/$name.log"; tail -30 "$out/$name.log"
    cases+="<testcase classname=\"fuzz\" name=\"$name\"><failure message=\"exit $rc\"/></testcase>"
  fi
  rm -rf "$scratch"
done
echo "<testsuite name=\"fuzz\" tests=\"$n\" failures=\"$fails\">$cases</testsuite>" >"$xml"
