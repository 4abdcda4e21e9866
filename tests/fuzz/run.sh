#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, AddressSanitizer + UndefinedBehaviorSanitizer) into build-fuzz/ and
# runs them on copies of their seed corpora, every core busy:
#   tests/fuzz/run.sh                     each harness in turn for 60 s, one process per core (what CI runs)
#   tests/fuzz/run.sh 480                 8 minutes per harness: the long campaign (docs/fuzzing.md)
#   tests/fuzz/run.sh 600 fuzz_api        one harness
#   tests/fuzz/run.sh 300 fuzz_config fuzz_api:480    a harness given its own time (HARNESS:SECONDS)
#   tests/fuzz/run.sh --together 600      every harness at once for 600 s, the processes spread over the cores
#   tests/fuzz/run.sh -j 4 60             4 processes (default: the number of cores)
# The processes of a harness share its working corpus (build-fuzz/fuzz-work/<harness>/corpus, kept between
# runs, so a long run continues where the last one stopped): libFuzzer reloads what the others found. A crash is
# written to build-fuzz/fuzz-work/<harness>/ as crash-*, and the script fails. Turn a crash into a regression
# test by copying it to tests/fuzz/regressions/<harness>/ (ctest replays it).
# The summary gives each harness's executions (all its processes together), executions per second, coverage and
# result; the same lines go to build-fuzz/fuzz-work/summary.txt.
# Environment: PANGU_FUZZ_BUILD_DIR (default build-fuzz), PANGU_FUZZ_JOBS (build jobs, default nproc).
set -euo pipefail
cd "$(dirname "$0")/../.."

jobs=$(nproc)
together=0
while [ $# -gt 0 ]; do
  case $1 in
    -j) jobs=$2; shift 2 ;;
    --together) together=1; shift ;;
    *) break ;;
  esac
done
secs=${1:-60}
shift || true
usage() { echo "usage: run.sh [-j PROCESSES] [--together] [SECONDS] [HARNESS[:SECONDS]...]" >&2; exit 2; }
case $secs$jobs in *[!0-9]* | 0*) usage ;; esac
all=(fuzz_safetensors fuzz_config fuzz_model_dir fuzz_tokenizer fuzz_api fuzz_train_state)
[ $# -gt 0 ] || set -- "${all[@]}"
harnesses=()
declare -A hsecs=()  # harness -> its seconds
for arg in "$@"; do
  h=${arg%%:*}
  t=$secs
  [ "$h" = "$arg" ] || t=${arg#*:}
  case " ${all[*]} " in *" $h "*) ;; *) echo "run.sh: unknown harness '$h'" >&2; usage ;; esac
  case $t in '' | *[!0-9]* | 0*) usage ;; esac
  harnesses+=("$h")
  hsecs[$h]=$t
done
build=${PANGU_FUZZ_BUILD_DIR:-build-fuzz}

# The tools are configured in because fuzz_api's models are written at build time by pangu-gen-model.
CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPANGU_BUILD_FUZZ=ON \
  -DPANGU_SANITIZE="address;undefined" -DPANGU_BUILD_TESTS=OFF -DPANGU_BUILD_SAMPLES=OFF \
  -DPANGU_BUILD_TOOLS=ON -DPANGU_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j"${PANGU_FUZZ_JOBS:-$(nproc)}" --target "${harnesses[@]}"

# alloc_dealloc_mismatch=0: see scripts/test.sh (libstdc++'s std::stable_sort buffer).
export ASAN_OPTIONS=alloc_dealloc_mismatch=0:detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

declare -A failed=()  # harness -> 1 when one of its processes failed (a finding)
declare -A owner=()   # process id -> harness
# Starts process number $2 of harness $1 in the background; its log is fuzz-work/<harness>/run-<n>.log.
start() {
  local h=$1 n=$2 work=$build/fuzz-work/$1
  local args=(-max_total_time="${hsecs[$h]}" -timeout=30 -rss_limit_mb=3072 -print_final_stats=1 -artifact_prefix="$work/")
  # -max_len: at least the largest seed (libFuzzer cuts longer inputs, and a cut model never loads).
  case $h in
    fuzz_model_dir) args+=(-max_len=98304 -dict=tests/fuzz/json.dict) ;;    # tiny-w4a8: 89 KiB
    fuzz_safetensors) args+=(-max_len=90112 -dict=tests/fuzz/json.dict) ;;  # tiny-w4a8: 83 KiB
    fuzz_train_state) args+=(-max_len=16384 -dict=tests/fuzz/json.dict) ;;  # the seeds are 6-13 KB
    fuzz_config) args+=(-max_len=8192 -dict=tests/fuzz/json.dict) ;;
    fuzz_tokenizer | fuzz_api) args+=(-max_len=4096) ;;
  esac
  local dirs=("$work/corpus" "tests/fuzz/corpus/$h")
  [ -d "tests/fuzz/regressions/$h" ] && dirs+=("tests/fuzz/regressions/$h")
  "$build/tests/fuzz/$h" "${args[@]}" "${dirs[@]}" >"$work/run-$n.log" 2>&1 &
  owner[$!]=$h
}

# Adds up a harness's processes: executions, the largest coverage, and whether every one ended well.
report() {
  local h=$1 work=$build/fuzz-work/$1 execs=0 cov=0 result=ok f e c
  for f in "$work"/run-*.log; do
    e=$(sed -n 's/^stat::number_of_executed_units: *//p' "$f" | tail -n 1)
    c=$(grep -o 'cov: [0-9]*' "$f" | tail -n 1 | tr -dc 0-9 || true)
    execs=$((execs + ${e:-0}))
    [ "${c:-0}" -gt "$cov" ] && cov=$c
  done
  [ -z "${failed[$h]:-}" ] || result="FAILED (see $work/run-*.log and $work/crash-*)"
  printf '%-18s %11s executions in %4s s %7s/s  cov %-6s %s\n' "$h" "$execs" "${hsecs[$h]}" $((execs / hsecs[$h])) "$cov" "$result"
}

# Runs the harnesses given, `per` processes each, all at once, and waits for them.
run_wave() {
  local per=$1 h n
  shift
  owner=()
  for h in "$@"; do
    mkdir -p "$build/fuzz-work/$h/corpus"
    rm -f "$build/fuzz-work/$h"/run-*.log
    for ((n = 0; n < per; ++n)); do start "$h" "$n"; done
  done
  echo "fuzz: $* for ${hsecs[$1]}s, $per process(es) each"
  for n in "${!owner[@]}"; do wait "$n" || failed[${owner[$n]}]=1; done
}

if [ $together = 1 ]; then
  per=$((jobs / ${#harnesses[@]}))
  [ $per -ge 1 ] || per=1
  run_wave $per "${harnesses[@]}"
else
  for h in "${harnesses[@]}"; do run_wave "$jobs" "$h"; done
fi

status=0
summary=$build/fuzz-work/summary.txt
: >"$summary"
total=0
for h in "${harnesses[@]}"; do
  line=$(report "$h")
  echo "$line" >>"$summary"
  read -r _ execs _ <<<"$line"
  total=$((total + execs))
  case $line in *FAILED*) status=1; tail -n 40 "$build/fuzz-work/$h"/run-*.log >&2 ;; esac
done
echo "all harnesses: $total executions ($( [ $together = 1 ] && echo together || echo in turn), $jobs processes)" >>"$summary"
sed 's/^/fuzz: /' "$summary"
exit $status
