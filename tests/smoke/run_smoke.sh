#!/usr/bin/env bash
# One smoke-test case: run_smoke.sh CASE GENERATE_BIN CLI_BIN MODEL_DIR [SAMPLE_BIN]
# SAMPLE_BIN is the sample the case runs (chat, static_arena). PANGU_TEST_EMULATOR, when set (a cross build:
# e.g. "qemu-aarch64 -L /usr/aarch64-linux-gnu"), runs every program under that emulator.
set -euo pipefail
case_name=$1 gen=$2 cli=$3 model=$4 sample=${5:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ -n "${PANGU_TEST_EMULATOR:-}" ]; then
  # Wrap each program in a script that starts it under the emulator, so the cases below stay unchanged.
  wrap() { printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$PANGU_TEST_EMULATOR" "$2" >"$tmp/$1"; chmod +x "$tmp/$1"; }
  wrap gen.sh "$gen" && gen=$tmp/gen.sh
  wrap cli.sh "$cli" && cli=$tmp/cli.sh
  if [ -n "$sample" ]; then wrap sample.sh "$sample" && sample=$tmp/sample.sh; fi
fi

fail() { echo "FAIL [$case_name]: $*" >&2; exit 1; }
# run EXPECTED_STATUS CMD...: runs CMD with stdout/stderr captured in $tmp/out and $tmp/err.
run() {
  local want=$1 got=0
  shift
  "$@" >"$tmp/out" 2>"$tmp/err" </dev/null || got=$?
  if [ "$got" != "$want" ]; then
    echo "--- stdout"; cat "$tmp/out"; echo "--- stderr"; cat "$tmp/err"
    fail "expected exit status $want, got $got: $*"
  fi
}
nonempty() { [ -s "$tmp/$1" ] || fail "$1 is empty"; }
# Diagnostics belong on stderr: the completion on stdout must not carry them.
clean_stdout() { ! grep -q '^pangu-cli:' "$tmp/out" || fail "diagnostics on stdout"; }

# A model whose vocabulary has the chat tokens (random weights, a 64-token context), for chat with the template.
chat_model=$(dirname "${BASH_SOURCE[0]}")/../fuzz/data/tiny-chat

# Golden greedy continuation of this prompt (models/pangu-tiny/golden.json, case 《静夜思》: 24 tokens).
poem=$'《静夜思》\n作者：李白\n床前明月光，'
poem_greedy=$'一年无人，一年无人，一年无人，一个人不知。\n      --'

case $case_name in
generate)
  run 0 "$gen" "$model" "$poem" 24
  [ "$(cat "$tmp/out")" = "$poem$poem_greedy" ] || fail "generate printed '$(cat "$tmp/out")', want the golden continuation"
  run 0 "$gen" "$model" "def main():" 16
  [ "$(wc -c <"$tmp/out")" -gt 13 ] || fail "no completion after the prompt"
  run 2 "$gen"
  nonempty err
  run 1 "$gen" /nonexistent "x"
  grep -q 'generate: loading the model' "$tmp/err" || fail "no error message for a missing model"
  ;;
cli_help)
  run 0 "$cli" --help
  grep -q -- '--temp' "$tmp/out" || fail "--help does not list --temp"
  run 0 "$cli" -h
  run 0 "$cli" --version
  grep -q 'libpangu_c' "$tmp/out" || fail "--version does not name the library"
  ;;
cli_usage_errors)
  run 2 "$cli" -n abc
  nonempty err
  for args in "-n abc" "--temp -1" "--temp nan" "--top-p 0" "--top-p 1.5" "--min-p -0.1" "--top-k -3" \
              "--repeat-penalty 0" "-t 0" "-b 0" "-c -5" "--seed x" "--bogus" "-p" "stray" "--stop ''" \
              "--keep 4" "--chat --context-shift"; do
    eval "run 2 \"\$cli\" -m \"\$model\" $args"
    grep -q 'pangu-cli' "$tmp/err" || fail "no usage message for: $args"
    [ ! -s "$tmp/out" ] || fail "stdout written for a usage error: $args"
  done
  run 2 "$cli" -p "no model given"
  run 2 "$cli" -m "$model" -p x -f /dev/null
  ;;
cli_bad_model)
  run 1 "$cli" -m /nonexistent -p x
  grep -q 'error: loading the model' "$tmp/err" || fail "no error message for a missing model"
  run 1 "$cli" -m "$model" -f /nonexistent/prompt.txt
  nonempty err
  run 1 "$cli" -m "$model" -p x -c 1000000
  grep -q 'error' "$tmp/err" || fail "no error for a context larger than the model's"
  ;;
cli_greedy)
  run 0 "$cli" -m "$model" -p "$poem" -n 24 --temp 0 -t 1
  [ "$(cat "$tmp/out")" = "$poem$poem_greedy" ] || fail "greedy output '$(cat "$tmp/out")' differs from golden"
  grep -q 'tokens/s' "$tmp/err" || fail "no timings on stderr"
  clean_stdout
  run 0 "$cli" -m "$model" -p "$poem" -n 24 --temp 0 --no-display-prompt --stop '一个人'
  [ "$(cat "$tmp/out")" = $'一年无人，一年无人，一年无人，' ] || fail "stop string not honoured: '$(cat "$tmp/out")'"
  printf '%s' "$poem" >"$tmp/prompt.txt"
  run 0 "$cli" -m "$model" -f "$tmp/prompt.txt" -n 24 --temp 0 --no-display-prompt --verbose-prompt
  [ "$(cat "$tmp/out")" = "$poem_greedy" ] || fail "-f prompt gives '$(cat "$tmp/out")'"
  grep -q -- '-> ' "$tmp/err" || fail "--verbose-prompt printed no tokens"
  run 0 "$cli" -m "$model" -p "import os" -n -1 -c 64 --temp 0.8 --seed 1
  grep -q 'stopped: \(end of text\|context full\)' "$tmp/err" || fail "-n -1 did not run to EOS or a full context"
  # With --context-shift a small context slides instead of filling up (unless the model ends the text first).
  run 0 "$cli" -m "$model" -p "import os" -n 200 -c 64 --context-shift --keep 4 --temp 0
  grep -q 'context shifts: [1-9]' "$tmp/err" || grep -q 'stopped: end of text' "$tmp/err" ||
    fail "--context-shift did not shift: $(cat "$tmp/err")"
  ;;
cli_deterministic)
  for mode in "--temp 0" "--temp 0.8 --seed 1234" "--temp 1.2 --top-k 0 --top-p 0.9 --min-p 0.05 --repeat-penalty 1.1 --seed 7"; do
    # shellcheck disable=SC2086
    run 0 "$cli" -m "$model" -p "def main():" -n 48 $mode
    nonempty out
    clean_stdout
    cp "$tmp/out" "$tmp/first"
    # shellcheck disable=SC2086
    run 0 "$cli" -m "$model" -p "def main():" -n 48 $mode
    cmp -s "$tmp/first" "$tmp/out" || fail "two runs with '$mode' differ"
  done
  run 0 "$cli" -m "$model" -p "def main():" -n 8 --temp 0.8
  grep -q '^pangu-cli: seed [0-9]' "$tmp/err" || fail "the clock seed is not printed"
  ;;
cli_chat)
  out=$(printf 'hello\nbye\n' | "$cli" -m "$model" --chat -n 16 --temp 0 2>"$tmp/err") || fail "chat exited $?: $(cat "$tmp/err")"
  [ -n "$out" ] || fail "chat printed nothing"
  grep -q 'plain text' "$tmp/err" || fail "the plain-text chat fallback is not announced"
  printf '%s\n' "$out" >"$tmp/out"
  clean_stdout
  # A system prompt (-p in chat mode), a long conversation in a small context, then EOF.
  printf 'one\ntwo\nthree\nfour\nfive\nsix\n' | "$cli" -m "$model" --chat -p "你是助手" -n 24 -c 96 --temp 0.8 --seed 3 \
    >"$tmp/out" 2>"$tmp/err" || fail "chat in a small context exited $?: $(cat "$tmp/err")"
  nonempty out
  run 0 "$cli" -m "$model" --chat -n 8   # stdin is /dev/null: immediate EOF
  # With the chat template (end-of-turn ids from pangu_chat_stop_tokens); the third turn overflows the context.
  printf 'hi\nhow are you\na longer message that does not fit\n' | "$cli" -m "$chat_model" --chat -n 24 --temp 0 \
    >"$tmp/out" 2>"$tmp/err" || fail "chat with the template exited $?: $(cat "$tmp/err")"
  grep -q "chat mode with the model's chat template" "$tmp/err" || fail "the chat template is not used: $(cat "$tmp/err")"
  grep -q 'the context is full' "$tmp/err" || fail "no new conversation after a full context: $(cat "$tmp/err")"
  nonempty out
  clean_stdout
  ;;
chat)
  # samples/chat.c: two turns on stdin, then EOF ends it with status 0.
  printf 'hello\nbye\n' | "$sample" "$model" >"$tmp/out" 2>"$tmp/err" || fail "chat exited $?: $(cat "$tmp/err")"
  nonempty out
  grep -q 'plain text' "$tmp/err" || fail "the plain-text fallback is not announced on stderr"
  printf 'one\n' | "$sample" "$model" "你是助手" >"$tmp/out" 2>"$tmp/err" || fail "chat with a system prompt exited $?"
  nonempty out
  run 0 "$sample" "$model"   # stdin is /dev/null: immediate EOF
  printf 'hi\nthere\n' | "$sample" "$chat_model" >"$tmp/out" 2>"$tmp/err" || fail "chat with the template exited $?"
  nonempty out
  ! grep -q 'plain text' "$tmp/err" || fail "the chat template is not used: $(cat "$tmp/err")"
  run 2 "$sample"
  run 1 "$sample" /nonexistent
  grep -q 'chat: loading the model' "$tmp/err" || fail "no error message for a missing model"
  ;;
static_arena)
  # samples/static_arena.c: all session memory in one static buffer; its budget goes to stderr.
  run 0 "$sample" "$model"
  nonempty out
  grep -q '^memory budget: arena [0-9]* bytes; session needs [0-9]*' "$tmp/err" || fail "no memory budget line: $(cat "$tmp/err")"
  grep -q '^used [0-9]* of [0-9]* arena bytes' "$tmp/err" || fail "no arena usage line: $(cat "$tmp/err")"
  ;;
*)
  fail "unknown case"
  ;;
esac
echo "ok [$case_name]"
