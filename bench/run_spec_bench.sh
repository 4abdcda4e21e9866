#!/usr/bin/env bash
# Speculative-decoding benchmark: build bench_spec, run it, and chart the speed-ups.
#
#   bench/run_spec_bench.sh [BUILD_DIR] [-- BENCH_SPEC_ARGS...]
#
# BUILD_DIR defaults to build (configured here if it is not yet). Results go to bench/results/ (gitignored):
#   spec.json  every figure (bench_spec --json)    spec.txt  the table bench_spec printed
#   spec.dat   speed-ups as a gnuplot table        spec.png  the chart (clustered bars, workload x mode)
# Arguments after -- go to bench_spec, e.g. `-- -r 9 -n 128 -t 1`. The exit status is bench_spec's (3 when an
# output differed from plain decoding); the chart is drawn either way.
# gnuplot comes from the Debian package gnuplot-nox, installed with apt-get when missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=build
if [[ $# -gt 0 && $1 != -- ]]; then
  build=$1
  shift
fi
[[ $# -gt 0 && $1 == -- ]] && shift
[[ $build == /* ]] || build=$root/$build
shared=$(cd "$root/../shared" 2>/dev/null && pwd) || {
  echo "run_spec_bench: $root/../shared not found (it holds data/dev.jsonl and the draft model)" >&2
  exit 1
}
results=$root/bench/results
mkdir -p "$results"

if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release
fi
cmake --build "$build" --target bench_spec -j2
bench=$build/bench/bench_spec

rc=0
"$bench" --shared "$shared" --json "$results/spec.json" --dat "$results/spec.dat" "$@" | tee "$results/spec.txt" ||
  rc=${PIPESTATUS[0]}
if [[ ! -s $results/spec.dat ]]; then
  echo "run_spec_bench: bench_spec failed (status $rc); no chart" >&2
  exit "$rc"
fi

if ! command -v gnuplot >/dev/null 2>&1; then
  echo "run_spec_bench: installing gnuplot-nox" >&2
  sudo=
  if [[ $(id -u) -ne 0 ]]; then sudo=sudo; fi
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends gnuplot-nox
fi

# The subtitle: the settings line of spec.dat (underscores escaped from gnuplot's enhanced text).
subtitle=$(sed -n 's/^# settings: //p' "$results/spec.dat" | sed 's/[_"]/\\\\&/g')
gnuplot <<EOF
set terminal pngcairo size 1100,600 font "sans,11"
set output "$results/spec.png"
set title "Speculative decoding: generation speed-up versus plain decoding (spec off)\n{/*0.8 $subtitle}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set ylabel "speed-up (median tok/s of the mode / median tok/s of off)"
set yrange [0:*]
set offsets 0, 0, graph 0.1, 0
set grid ytics
set key outside right top vertical
set key autotitle columnheader
set xtics nomirror
set datafile missing "NaN"
# Bars of cluster k sit at k + (j - 1.5) / 5 for the 4 modes j = 0..3 (gap 1): the labels go on top of them.
plot for [i=2:5] "$results/spec.dat" using i:xtic(1), \
     for [i=2:5] "$results/spec.dat" using (\$0 + (i - 3.5) / 5.0):i:(sprintf("%.2f", column(i))) \
       with labels offset 0,0.7 font ",8" notitle, \
     1 with lines dashtype 2 lc rgb "black" notitle
EOF
echo "run_spec_bench: $results/spec.json, $results/spec.txt, $results/spec.png" >&2
exit "$rc"
