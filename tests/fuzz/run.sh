#!/usr/bin/env bash
# Builds the libFuzzer harnesses (clang, AddressSanitizer + UndefinedBehaviorSanitizer) into build-fuzz/ and
# runs each for SECONDS (default 60), one after the other, on a copy of its seed corpus.
#   tests/fuzz/run.sh                 60 s per harness (what CI runs)
#   tests/fuzz/run.sh 1200            20 minutes per harness
#   tests/fuzz/run.sh 600 fuzz_api    one harness
# New inputs go to build-fuzz/fuzz-work/<harness>/corpus (kept between runs, so a long run continues where the
# last one stopped); a crash is written to build-fuzz/fuzz-work/<harness>/ as crash-*, and the script fails.
# Turn a crash into a regression test by copying it to tests/fuzz/regressions/<harness>/ (ctest replays it).
# Environment: PANGU_FUZZ_BUILD_DIR (default build-fuzz), PANGU_FUZZ_JOBS (build jobs, default nproc).
set -euo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-60}
shift || true
all=(fuzz_safetensors fuzz_config fuzz_model_dir fuzz_tokenizer fuzz_api fuzz_train_state)
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=("${all[@]}")
build=${PANGU_FUZZ_BUILD_DIR:-build-fuzz}

CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPANGU_BUILD_FUZZ=ON \
  -DPANGU_SANITIZE="address;undefined" -DPANGU_BUILD_TESTS=OFF -DPANGU_BUILD_SAMPLES=OFF \
  -DPANGU_BUILD_TOOLS=OFF -DPANGU_BUILD_BENCH=OFF >/dev/null
cmake --build "$build" -j"${PANGU_FUZZ_JOBS:-$(nproc)}" --target "${harnesses[@]}"

# alloc_dealloc_mismatch=0: see scripts/test.sh (libstdc++'s std::stable_sort buffer).
export ASAN_OPTIONS=alloc_dealloc_mismatch=0:detect_leaks=1:abort_on_error=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
status=0
summary=()
for h in "${harnesses[@]}"; do
  work=$build/fuzz-work/$h
  mkdir -p "$work/corpus"
  args=(-max_total_time="$secs" -timeout=30 -rss_limit_mb=3072 -print_final_stats=1 -artifact_prefix="$work/")
  case $h in
    fuzz_model_dir) args+=(-max_len=65536 -dict=tests/fuzz/json.dict) ;;
    fuzz_safetensors) args+=(-max_len=32768 -dict=tests/fuzz/json.dict) ;;
    fuzz_train_state) args+=(-max_len=16384 -dict=tests/fuzz/json.dict) ;;  # the seeds are 6-13 KB
    fuzz_config) args+=(-max_len=8192 -dict=tests/fuzz/json.dict) ;;
    fuzz_tokenizer | fuzz_api) args+=(-max_len=4096) ;;
  esac
  dirs=("$work/corpus" "tests/fuzz/corpus/$h")
  [ -d "tests/fuzz/regressions/$h" ] && dirs+=("tests/fuzz/regressions/$h")
  echo "fuzz: $h for ${secs}s"
  log=$work/last-run.log
  if "$build/tests/fuzz/$h" "${args[@]}" "${dirs[@]}" >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (see $log and $work/crash-*)"
    status=1
    tail -n 40 "$log" >&2
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
  summary+=("$(printf '%-18s %10s executions  %-10s %s' "$h" "${execs:-?}" "${cov:-}" "$result")")
done
printf 'fuzz: %s\n' "${summary[@]}"
exit $status
