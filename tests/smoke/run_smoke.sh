#!/usr/bin/env bash
# One smoke-test case: run_smoke.sh CASE GENERATE_BIN CLI_BIN MODEL_DIR [SAMPLE_BIN [REF_BIN SHARED_DIR]]
# SAMPLE_BIN is the sample or tool the case runs (chat, static_arena, pangu-perplexity for the ppl_* cases,
# pangu-gen-model for cli_openpangu_layout);
# ppl_reference also takes REF_BIN, the test_quant program, and SHARED_DIR, which holds data/dev.jsonl.
# PANGU_TEST_EMULATOR, when set (a cross build: e.g. "qemu-aarch64 -L /usr/aarch64-linux-gnu"), runs every
# program under that emulator.
set -euo pipefail
case_name=$1 gen=$2 cli=$3 model=$4 sample=${5:-} ref=${6:-} shared=${7:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if [ -n "${PANGU_TEST_EMULATOR:-}" ]; then
  # Wrap each program in a script that starts it under the emulator, so the cases below stay unchanged.
  wrap() { printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$PANGU_TEST_EMULATOR" "$2" >"$tmp/$1"; chmod +x "$tmp/$1"; }
  wrap gen.sh "$gen" && gen=$tmp/gen.sh
  wrap cli.sh "$cli" && cli=$tmp/cli.sh
  if [ -n "$sample" ]; then wrap sample.sh "$sample" && sample=$tmp/sample.sh; fi
  if [ -n "$ref" ]; then wrap ref.sh "$ref" && ref=$tmp/ref.sh; fi
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

# pangu-perplexity's stdout is one line, "ppl X tokens N": check it, with 1 < X < the vocabulary size (which
# the tool's load line on stderr gives), and set $ppl and $scored.
ppl_line() {
  [ "$(wc -l <"$tmp/out")" = 1 ] || fail "stdout is not one line: $(cat "$tmp/out")"
  grep -Eq '^ppl [0-9]+\.[0-9]{4} tokens [0-9]+$' "$tmp/out" || fail "bad final line: '$(cat "$tmp/out")'"
  read -r _ ppl _ scored <"$tmp/out"
  local vocab
  vocab=$(sed -n 's/.*, vocab \([0-9]*\),.*/\1/p' "$tmp/err")
  [ -n "$vocab" ] || fail "no vocabulary size on stderr"
  awk -v p="$ppl" -v v="$vocab" 'BEGIN { exit !(p > 1 && p < v) }' || fail "ppl $ppl is not between 1 and $vocab"
}
# The tokens of the file's documents, from the tool's stderr ("FILE: D documents, T tokens").
doc_tokens() { sed -n 's/.*: [0-9]* documents\{0,1\}, \([0-9]*\) tokens$/\1/p' "$tmp/err"; }
# Scored tokens of one document of T tokens in windows of C: all but each window's first, T - ceil(T / C).
expect_scored() { echo $(($1 - ($1 + $2 - 1) / $2)); }
ppl_data=$(dirname "${BASH_SOURCE[0]}")/data

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
              "--keep 4" "--chat --context-shift" "--precision int4" "--precision" "--kv-type q4" "--kv-type"; do
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
  # int8 activations multiply integer weights; the bundled model has none
  run 1 "$cli" -m "$model" -p x --precision int8
  grep -q 'int8 activations need integer weights' "$tmp/err" || fail "no reason for --precision int8: $(cat "$tmp/err")"
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
cli_generation_config)
  # A checkpoint's generation_config.json gives the sampling defaults; flags given override them.
  cp "$chat_model"/* "$tmp/"
  printf '{"do_sample": true, "temperature": 0.55, "top_k": 7, "top_p": 0.8, "max_new_tokens": 3}' \
    >"$tmp/generation_config.json"
  run 0 "$cli" -m "$tmp" -p "hi" --seed 1
  grep -q 'temp 0.55, top-k 7, top-p 0.8,' "$tmp/err" || fail "generation_config.json not honoured: $(cat "$tmp/err")"
  grep -q 'sampling defaults from .*generation_config.json' "$tmp/err" || fail "the defaults' source is not said"
  grep -q 'generate *3 tokens' "$tmp/err" || grep -q 'stopped: end of text' "$tmp/err" ||
    fail "max_new_tokens from generation_config.json not honoured: $(cat "$tmp/err")"
  run 0 "$cli" -m "$tmp" -p "hi" --seed 1 --temp 0.3 --top-k 2 -n 2
  grep -q 'temp 0.3, top-k 2, top-p 0.8,' "$tmp/err" || fail "flags do not override generation_config.json"
  printf '{"do_sample": false}' >"$tmp/generation_config.json"
  run 0 "$cli" -m "$tmp" -p "hi" -n 2
  grep -q 'temp 0,' "$tmp/err" || fail "do_sample false is not greedy: $(cat "$tmp/err")"
  printf '{"top_p": 2}' >"$tmp/generation_config.json"
  run 1 "$cli" -m "$tmp" -p "hi" -n 2
  grep -q 'generation_config.json.*top_p' "$tmp/err" || fail "a bad generation_config.json is not named"
  rm "$tmp/generation_config.json"
  # --reasoning: show or hide; hide on a model without the markers says so.
  run 0 "$cli" -m "$tmp" -p "hi" -n 2 --reasoning hide
  grep -q 'no \[unused16\]/\[unused17\] tokens' "$tmp/err" || fail "--reasoning hide without markers is silent"
  run 2 "$cli" -m "$tmp" -p "hi" --reasoning maybe
  grep -q 'takes show or hide' "$tmp/err" || fail "--reasoning maybe not refused"
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
cli_openpangu_layout)
  # SAMPLE_BIN is pangu-gen-model. Checkpoints in the published openPangu-Embedded-1B/-7B layout (random weights,
  # the real tokenizer files and special ids): chat goes through the chat template with the sampling defaults of
  # generation_config.json; with the head biased towards [unused10] (--bias-token) every reply ends there at once,
  # at the end of text, with nothing printed for it.
  run 0 "$sample" --layout openpangu-1b -o "$tmp/1b" --seed 3
  printf 'hello\n你好\n' | "$cli" -m "$tmp/1b" --chat -n 8 --seed 1 >"$tmp/out" 2>"$tmp/err" ||
    fail "chat on the 1B layout exited $?: $(cat "$tmp/err")"
  grep -q "chat mode with the model's chat template" "$tmp/err" || fail "the chat template is not used: $(cat "$tmp/err")"
  grep -q 'sampling defaults from .*generation_config.json' "$tmp/err" || fail "generation_config.json is not read"
  grep -q 'temp 1, top-k 0, top-p 0.8,' "$tmp/err" ||
    fail "the sampling settings are not generation_config.json's: $(cat "$tmp/err")"
  [ -n "$(tr -d '\n' <"$tmp/out")" ] || fail "the replies are empty"
  clean_stdout
  ! grep -q 'unused' "$tmp/out" || fail "a special token was printed: $(cat "$tmp/out")"
  prompt='[unused9]系统：[unused10][unused9]用户：你好[unused10][unused9]助手：'
  for layout in openpangu-1b openpangu-7b; do
    run 0 "$sample" --layout "$layout" -o "$tmp/$layout" --bias-token 45892
    printf 'hello\n你好\n' | "$cli" -m "$tmp/$layout" --chat -n 16 --seed 1 >"$tmp/out" 2>"$tmp/err" ||
      fail "chat on the $layout layout exited $?: $(cat "$tmp/err")"
    [ -z "$(tr -d '\n' <"$tmp/out")" ] || fail "$layout: the replies are not empty: '$(cat "$tmp/out")'"
    grep -q 'generate *2 tokens' "$tmp/err" || fail "$layout: the replies did not end at [unused10]: $(cat "$tmp/err")"
    run 0 "$cli" -m "$tmp/$layout" -p "$prompt" -n 16 --seed 1 --no-display-prompt
    [ -z "$(cat "$tmp/out")" ] || fail "$layout: [unused10] was printed as '$(cat "$tmp/out")'"
    grep -q 'stopped: end of text' "$tmp/err" || fail "$layout: not stopped at the end of text: $(cat "$tmp/err")"
    grep -q 'generate *1 tokens' "$tmp/err" || fail "$layout: more than [unused10] was generated: $(cat "$tmp/err")"
  done
  # The 7B's reasoning markers, [unused16] and [unused17], are one token each: --reasoning hide finds them.
  run 0 "$cli" -m "$tmp/openpangu-7b" -p "hi" -n 2 --reasoning hide
  ! grep -q 'no \[unused16\]/\[unused17\] tokens' "$tmp/err" || fail "--reasoning hide does not find the 7B's markers"
  # A 7B-layout model whose greedy output is [unused16] 甲 [unused17] 乙 乙 ... (--chain; 甲 is 2612, 乙 3563 in
  # the layout's tokenizer, as in pangu-tiny's): of 5 tokens, shown, the reasoning 甲 is printed without the
  # markers; hidden, only the answer is.
  run 0 "$sample" --layout openpangu-7b -o "$tmp/think" --chain 45974,2612,45982,3563
  run 0 "$cli" -m "$tmp/think" -p "hi" -n 5 --temp 0 --no-display-prompt
  [ "$(cat "$tmp/out")" = '甲乙乙' ] || fail "--reasoning show printed '$(cat "$tmp/out")', want 甲乙乙"
  run 0 "$cli" -m "$tmp/think" -p "hi" -n 5 --temp 0 --no-display-prompt --reasoning hide
  [ "$(cat "$tmp/out")" = '乙乙' ] || fail "--reasoning hide printed '$(cat "$tmp/out")', want 乙乙"
  printf 'hello
' | "$cli" -m "$tmp/think" --chat -n 5 --temp 0 --reasoning hide >"$tmp/out" 2>"$tmp/err" ||
    fail "chat with --reasoning hide exited $?: $(cat "$tmp/err")"
  [ "$(tr -d '\n' <"$tmp/out")" = '乙乙' ] || fail "chat --reasoning hide printed '$(cat "$tmp/out")'"
  run 2 "$sample" --layout openpangu-1b -o "$tmp/tied" --chain 45974,2612
  grep -q 'untied' "$tmp/err" || fail "--chain on a tied head is not refused"
  run 2 "$sample" --layout openpangu-7b -o "$tmp/bad" --chain 45974,,2612
  grep -q 'token ids separated by commas' "$tmp/err" || fail "a malformed --chain is not refused"
  ;;
quantize_eval)
  # SAMPLE_BIN is pangu-quantize, REF_BIN pangu-perplexity. --eval reports the perplexity of the input and the
  # output on the same text, and the figures are pangu-perplexity's own.
  run 0 "$sample" -i "$model" -o "$tmp/q8" --eval "$shared/data/dev.jsonl" --eval-jsonl --eval-tokens 1024 --eval-ctx 128
  line=$(grep 'perplexity on .*dev.jsonl (1024 tokens, windows of 128): ' "$tmp/err") ||
    fail "no perplexity line: $(cat "$tmp/err")"
  before=$(printf '%s' "$line" | sed 's/.*: \([0-9.]*\) -> \([0-9.]*\) .*/\1/')
  after=$(printf '%s' "$line" | sed 's/.*: \([0-9.]*\) -> \([0-9.]*\) .*/\2/')
  run 0 "$ref" -m "$model" -f "$shared/data/dev.jsonl" --jsonl --max-tokens 1024 -c 128
  grep -q "^ppl $before tokens 1024$" "$tmp/out" || fail "before: $before, pangu-perplexity says $(cat "$tmp/out")"
  run 0 "$ref" -m "$tmp/q8" -f "$shared/data/dev.jsonl" --jsonl --max-tokens 1024 -c 128
  grep -q "^ppl $after tokens 1024$" "$tmp/out" || fail "after: $after, pangu-perplexity says $(cat "$tmp/out")"
  awk -v b="$before" -v a="$after" 'BEGIN { d = a / b - 1; exit !(d < 0.01 && d > -0.01) }' ||
    fail "W8A16 moved perplexity by more than 1 %: $before -> $after"
  # Bad input: a missing file is refused before any work, and nothing is written.
  run 1 "$sample" -i "$model" -o "$tmp/q8b" --eval "$tmp/missing.txt"
  grep -q -- '--eval: .*missing.txt is not a file' "$tmp/err" || fail "a missing --eval file is not named"
  [ ! -e "$tmp/q8b" ] || fail "output written despite a bad --eval"
  run 2 "$sample" -i "$model" -o "$tmp/q8b" --eval "$tmp/x" --eval-tokens 0
  grep -q 'take positive integers' "$tmp/err" || fail "--eval-tokens 0 is not refused"
  # W4A8 (groups of 64: pangu-tiny's widths, 192 and 512, are multiples of 64 but 192 is not of 128): the output's
  # config says int8 activations, which pangu-perplexity takes by itself; the figure is its own, within 5 %.
  run 0 "$sample" -i "$model" -o "$tmp/q4" --scheme w4a8 --group 64 --eval "$shared/data/dev.jsonl" --eval-jsonl \
    --eval-tokens 1024 --eval-ctx 128
  grep -q 'wrote .*q4 (w4a8, groups of 64)' "$tmp/err" || fail "the report does not name the scheme: $(cat "$tmp/err")"
  after=$(sed -n 's/.*perplexity on .*: [0-9.]* -> \([0-9.]*\) .*/\1/p' "$tmp/err")
  run 0 "$ref" -m "$tmp/q4" -f "$shared/data/dev.jsonl" --jsonl --max-tokens 1024 -c 128
  grep -q "^ppl $after tokens 1024$" "$tmp/out" || fail "w4a8: $after, pangu-perplexity says $(cat "$tmp/out")"
  awk -v b="$before" -v a="$after" 'BEGIN { d = a / b - 1; exit !(d < 0.05 && d > -0.05) }' ||
    fail "W4A8 moved perplexity by more than 5 %: $before -> $after"
  # W8A8 with SmoothQuant calibrated on 2048 tokens.
  run 0 "$sample" -i "$model" -o "$tmp/sq" --scheme w8a8 --calib "$shared/data/dev.jsonl" --calib-jsonl \
    --calib-tokens 2048 --smooth 0.5
  grep -q 'calibration: 2048 tokens in ' "$tmp/err" || fail "no calibration line: $(cat "$tmp/err")"
  # Bad schemes and groups: a usage error, or an error naming the layer the group does not fit; nothing written.
  run 2 "$sample" -i "$model" -o "$tmp/bad" --scheme w4a8 --group 48
  grep -q -- '--group takes a multiple of 32' "$tmp/err" || fail "--group 48 is not refused"
  run 2 "$sample" -i "$model" -o "$tmp/bad" --scheme w8a8 --group 64
  grep -q -- '--group applies to --scheme w4a8, w4a16 and mixed' "$tmp/err" || fail "--group with w8a8 is not refused"
  run 2 "$sample" -i "$model" -o "$tmp/bad" --scheme w8a8 --smooth 0.5
  grep -q -- '--smooth needs calibration text' "$tmp/err" || fail "--smooth without --calib is not refused"
  run 1 "$sample" -i "$model" -o "$tmp/bad" --scheme w4a8 --group 128
  grep -q 'has 192 columns; --scheme w4a8 with --group 128' "$tmp/err" || fail "a width --group does not divide is not named"
  [ ! -e "$tmp/bad" ] || fail "output written despite a bad scheme or group"
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
ppl_text)
  # pangu-perplexity on a plain text file: one document, windows of -c tokens.
  run 0 "$sample" -m "$model" -f "$ppl_data/perplexity.txt"
  ppl_line
  grep -q 'window 1 of 1, ' "$tmp/err" || fail "no progress line on stderr"
  T=$(doc_tokens)
  [[ "$T" =~ ^[0-9]+$ && "$T" -gt 100 ]] || fail "no token count on stderr: $(cat "$tmp/err")"
  [ "$scored" = "$(expect_scored "$T" 512)" ] || fail "$scored tokens scored of $T with -c 512"
  cp "$tmp/out" "$tmp/default"
  # The window length changes N as T - ceil(T / C); batch size and threads change nothing.
  for c in 2 16 100 $((T - 1)) "$T"; do
    run 0 "$sample" -m "$model" -f "$ppl_data/perplexity.txt" -c "$c"
    ppl_line
    [ "$scored" = "$(expect_scored "$T" "$c")" ] || fail "-c $c scored $scored of $T tokens"
  done
  run 0 "$sample" -m "$model" -f "$ppl_data/perplexity.txt" -b 7 -t 1
  cmp -s "$tmp/default" "$tmp/out" || fail "-b 7 -t 1 gives '$(cat "$tmp/out")', not '$(cat "$tmp/default")'"
  # --max-tokens caps N (and changes nothing when it is larger than the text).
  for n in 1 50; do
    run 0 "$sample" -m "$model" -f "$ppl_data/perplexity.txt" --max-tokens "$n"
    ppl_line
    [ "$scored" = "$n" ] || fail "--max-tokens $n scored $scored"
  done
  run 0 "$sample" -m "$model" -f "$ppl_data/perplexity.txt" --max-tokens 1000000
  cmp -s "$tmp/default" "$tmp/out" || fail "--max-tokens beyond the text changed the result"
  # --json: one object whose figures agree with the line's.
  run 0 "$sample" -m "$model" -f "$ppl_data/perplexity.txt" -c 16 --json
  cp "$tmp/out" "$tmp/json"
  run 0 "$sample" -m "$model" -f "$ppl_data/perplexity.txt" -c 16
  ppl_line
  if command -v python3 >/dev/null; then
    python3 - "$tmp/json" "$ppl" "$scored" "$(((T + 15) / 16))" <<'PY' || fail "bad --json output: $(cat "$tmp/json")"
import json, math, sys
d = json.load(open(sys.argv[1]))
assert sorted(d) == ["ctx", "nll", "ppl", "tokens", "windows"], d
assert d["tokens"] == int(sys.argv[3]) and d["windows"] == int(sys.argv[4]) and d["ctx"] == 16, d
assert abs(d["ppl"] - float(sys.argv[2])) <= 5.1e-5 and abs(math.exp(d["nll"]) - d["ppl"]) <= 1e-5 * d["ppl"], d
PY
  else
    grep -Eq '^\{"ppl": [0-9.]+, "tokens": '"$scored"', "nll": [0-9.]+, "windows": [0-9]+, "ctx": 16\}$' "$tmp/json" ||
      fail "bad --json output: $(cat "$tmp/json")"
  fi
  run 0 "$sample" --help
  grep -q -- '--max-tokens' "$tmp/out" || fail "--help does not list --max-tokens"
  run 0 "$sample" --version
  grep -q 'libpangu_c' "$tmp/out" || fail "--version does not name the library"
  ;;
ppl_jsonl)
  # pangu-perplexity --jsonl: each line's "text" is a document (escapes decoded), windows never span two.
  run 0 "$sample" -m "$model" -f "$ppl_data/perplexity.jsonl" --jsonl
  ppl_line
  grep -q ': 3 documents, ' "$tmp/err" || fail "perplexity.jsonl is not read as 3 documents: $(cat "$tmp/err")"
  T=$(doc_tokens)
  [ "$scored" = $((T - 3)) ] || fail "$scored tokens scored of $T in 3 documents shorter than the window"
  cp "$tmp/out" "$tmp/all"
  # The first line holds perplexity.txt in escapes (\" \\ \n \t, \uXXXX with a surrogate pair): the same result.
  run 0 "$sample" -m "$model" -f "$ppl_data/perplexity.txt"
  cp "$tmp/out" "$tmp/text"
  head -n 1 "$ppl_data/perplexity.jsonl" >"$tmp/one.jsonl"
  run 0 "$sample" -m "$model" -f "$tmp/one.jsonl" --jsonl
  cmp -s "$tmp/text" "$tmp/out" || fail "the escaped text gives '$(cat "$tmp/out")', the text file '$(cat "$tmp/text")'"
  # CRLF line ends change nothing; --max-tokens may stop inside the second document.
  sed 's/$/\r/' "$ppl_data/perplexity.jsonl" >"$tmp/crlf.jsonl"
  run 0 "$sample" -m "$model" -f "$tmp/crlf.jsonl" --jsonl
  cmp -s "$tmp/all" "$tmp/out" || fail "CRLF line ends change the result"
  n=$(($(cut -d' ' -f4 "$tmp/text") + 5))
  run 0 "$sample" -m "$model" -f "$ppl_data/perplexity.jsonl" --jsonl --max-tokens "$n"
  ppl_line
  [ "$scored" = "$n" ] || fail "--max-tokens $n scored $scored"
  ;;
ppl_errors)
  # Usage errors: status 2, a message naming the tool, nothing on stdout.
  txt=$ppl_data/perplexity.txt
  for args in "" "-m $model" "-f $txt" "-m $model -f $txt --bogus" "-m $model -f" "-m $model -f $txt -c" \
              "-m $model -f $txt -c 1" "-m $model -f $txt -c 0" "-m $model -f $txt -c -5" "-m $model -f $txt -c abc" \
              "-m $model -f $txt -c 99999999999" "-m $model -f $txt -b 0" "-m $model -f $txt -b x" \
              "-m $model -f $txt -t 0" "-m $model -f $txt -t 2x" "-m $model -f $txt --max-tokens 0" \
              "-m $model -f $txt --max-tokens x" "-m $model -f $txt --backend ''" \
              "-m $model -f $txt --precision fp8" "-m $model -f $txt --precision" "-m $model -f $txt --kv-type q4" \
              "-m $model -f $txt --kv-type" "-m $model -f $txt stray"; do
    eval "run 2 \"\$sample\" $args"
    grep -q '^pangu-perplexity: ' "$tmp/err" || fail "no usage message for: $args"
    [ ! -s "$tmp/out" ] || fail "stdout written for a usage error: $args"
  done
  grep -q "unexpected argument 'stray'" "$tmp/err" || fail "the stray argument is not named"
  # Runtime errors: status 1 and a message saying what is wrong (and where, for a JSONL line).
  ppl_error() { # ppl_error PATTERN ARGS...: the tool fails with status 1 and PATTERN on stderr
    local pattern=$1
    shift
    run 1 "$sample" "$@"
    grep -q -- "$pattern" "$tmp/err" || fail "no '$pattern' for: $* ($(cat "$tmp/err"))"
    [ ! -s "$tmp/out" ] || fail "stdout written for an error: $*"
  }
  ppl_error "cannot open '/nonexistent/text.txt'" -m "$model" -f /nonexistent/text.txt
  ppl_error "cannot read '$tmp'" -m "$model" -f "$tmp"
  : >"$tmp/empty.txt"
  ppl_error "is empty" -m "$model" -f "$tmp/empty.txt"
  ppl_error "is empty" -m "$model" -f "$tmp/empty.txt" --jsonl
  printf '\n  \n' >"$tmp/blank.jsonl"
  ppl_error "holds no JSON lines" -m "$model" -f "$tmp/blank.jsonl" --jsonl
  printf '{"text": ""}\n' >"$tmp/short.jsonl" # BOS alone: fewer than 2 tokens
  ppl_error "nothing to score" -m "$model" -f "$tmp/short.jsonl" --jsonl
  ppl_error "loading the model" -m /nonexistent -f "$txt"
  ppl_error "unknown device backend" -m "$model" -f "$txt" --backend nonesuch
  ppl_error "int8 activations need integer weights" -m "$model" -f "$txt" --precision int8
  ppl_error "-c 5000 is out of range" -m "$model" -f "$txt" -c 5000
  # Malformed JSONL: line 3 is bad (line 2 is blank), and the message names it.
  while IFS= read -r bad; do
    printf '{"text": "fine"}\n\n%s\n{"text": "after"}\n' "$bad" >"$tmp/bad.jsonl"
    ppl_error "bad.jsonl:3: " -m "$model" -f "$tmp/bad.jsonl" --jsonl
  done <<'BAD'
{"text": "unterminated
{"text": "no closing brace"
{"text": 5}
{"name": "no text field"}
{"text": ["a list"]}
{"text": null}
["text", "not an object"]
"text"
{"text": "bad escape \x"}
{"text": "lone high surrogate \ud83d"}
{"text": "lone low surrogate \ude00"}
{"text": "bad hex \u12g4"}
{"text": "raw	tab"}
{"text": "x"} trailing
{"text": "x",}
{"text" "x"}
{"a": 01, "text": "x"}
{"a": tru, "text": "x"}
BAD
  printf '{"text": "fine"}\n\n{"text": "not UTF-8 \377"}\n' >"$tmp/bad.jsonl"
  ppl_error "tokenizing .*bad.jsonl:3: invalid UTF-8" -m "$model" -f "$tmp/bad.jsonl" --jsonl
  ;;
ppl_reference)
  # The tool against the project's other perplexity computation (tests/unit/test_quant.cpp, dev_nll: the same
  # windows of dev.jsonl, its own JSON reader and log-softmax): the same figure to the 4 decimals it prints.
  run 0 "$ref" --gtest_filter=Quantize.PerplexityWithinOnePercentOfFp32
  want=$(sed -n 's/^dev.jsonl perplexity over 16384 tokens: fp32 \([0-9.]*\),.*/\1/p' "$tmp/out")
  [ -n "$want" ] || fail "test_quant printed no fp32 perplexity: $(cat "$tmp/out")"
  run 0 "$sample" -m "$model" -f "$shared/data/dev.jsonl" --jsonl -c 256 --max-tokens 16384 -t 2
  ppl_line
  [ "$scored" = 16384 ] || fail "$scored tokens scored, not 16384"
  awk -v a="$ppl" -v b="$want" 'BEGIN { d = a - b; exit !(d <= 1e-4 && d >= -1e-4) }' ||
    fail "pangu-perplexity gives $ppl, test_quant $want"
  echo "pangu-perplexity $ppl, test_quant $want"
  ;;
*)
  fail "unknown case"
  ;;
esac
echo "ok [$case_name]"
