#!/usr/bin/env bash
# run-tests.sh - every test of keepmq, in stages, each writing a JUnit report
# into $OUT; scripts/summarize.py turns them into one line of passed/failed.
#   1. release build + unit tests (ctest)
#   2. sanitizer build (ASan + UBSan) + unit tests
#   3. integration tests (pytest, real broker, real clients) on the release build
#   4. the same integration tests on the sanitizer build
#   5. fuzzing: every libFuzzer target for FUZZ_SECONDS from its seed corpus
# A stage that cannot even build counts as a failed test, never as a skip.
#   FUZZ_SECONDS (default 60)   STAGES="unit asan integration integration-asan fuzz"
#   PYTEST_ARGS (extra pytest arguments, e.g. -k connect)
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/build/test-results}
JOBS=$(nproc)
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
STAGES=${STAGES:-"unit asan integration integration-asan fuzz"}
PY=/usr/bin/python3 # Debian's python: it sees the python3-* packages
rm -rf "$OUT"; mkdir -p "$OUT"
T0=$(date +%s)

want() { [[ " $STAGES " == *" $1 "* ]]; }
stage() { printf '\n=== %s\n' "$*"; }
# fail_case NAME MESSAGE: records a failed pseudo-test (a build that broke)
fail_case() {
  cat >"$OUT/$1.xml" <<XML
<testsuite name="$1" tests="1" failures="1"><testcase classname="stage" name="$1"><failure message="$2"/></testcase></testsuite>
XML
}
build() { # dir target cmake-args...
  local dir=$1 target=$2; shift 2
  cmake -S . -B "$dir" "$@" >"$OUT/cmake-$(basename "$dir").log" 2>&1 &&
    cmake --build "$dir" --target "$target" -j"$JOBS" >>"$OUT/cmake-$(basename "$dir").log" 2>&1
}

if want unit || want integration; then
  stage "release build"
  if build build all -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
    if want unit; then
      stage "unit tests (release)"
      (cd build && ctest --output-on-failure --output-junit "$OUT/unit.xml" -j"$JOBS")
    fi
  else
    tail -40 "$OUT/cmake-build.log"; fail_case build-release "release build failed"
  fi
fi

if want asan || want integration-asan; then
  stage "sanitizer build"
  if build build-asan all -DCMAKE_BUILD_TYPE=Debug -DKEEPMQ_SANITIZE=ON -DKEEPMQ_BENCH=OFF; then
    if want asan; then
      stage "unit tests (ASan+UBSan)"
      (cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure \
         --output-junit "$OUT/unit-asan.xml" -j"$JOBS")
    fi
  else
    tail -40 "$OUT/cmake-build-asan.log"; fail_case build-asan "sanitizer build failed"
  fi
fi

run_pytest() { # name binary
  local name=$1 bin=$2
  if [ ! -x "$bin" ]; then fail_case "$name" "no broker binary $bin"; return; fi
  KEEPMQ_BIN=$bin $PY -m pytest tests/integration -q -p no:cacheprovider \
    --junitxml="$OUT/$name.xml" -o junit_suite_name="$name" ${PYTEST_ARGS:-}
}
if want integration; then
  stage "integration tests (release)"
  run_pytest integration build/keepmq
fi
if want integration-asan; then
  stage "integration tests (ASan+UBSan)"
  ASAN_OPTIONS=detect_leaks=1:halt_on_error=0 UBSAN_OPTIONS=print_stacktrace=1 \
    run_pytest integration-asan build-asan/keepmq
fi

if want fuzz; then
  stage "fuzzing, ${FUZZ_SECONDS}s per target"
  if build build-fuzz fuzzers -DCMAKE_C_COMPILER=clang -DKEEPMQ_FUZZ=ON -DKEEPMQ_TESTS=OFF -DKEEPMQ_BENCH=OFF; then
    scripts/fuzz.sh build-fuzz "$FUZZ_SECONDS" "$OUT"
  else
    tail -40 "$OUT/cmake-build-fuzz.log"; fail_case build-fuzz "fuzz build failed"
  fi
fi

$PY scripts/summarize.py "$OUT" "$(( $(date +%s) - T0 ))"
