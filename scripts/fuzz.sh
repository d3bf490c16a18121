#!/usr/bin/env bash
# Builds the libFuzzer targets (clang-14, ASan + UBSan, see fuzz/README.md) and fuzzes each for a fixed time:
#   bash scripts/fuzz.sh                     every target
#   bash scripts/fuzz.sh fuzz_lse fuzz_merge some of them
# Environment: FUZZ_SECONDS (per target, default 45), FUZZ_JOBS (targets fuzzed at once, default 1).
# Each target first replays its saved reproducers (fuzz/regressions/<target>/), then fuzzes from a copy of its seed
# corpus (fuzz/corpus/<target>/) in a temporary directory, and prints its executions and coverage. A crash, leak,
# timeout, sanitizer report or property violation fails the script; the input is kept in <build>/fuzz-artifacts/.
# Build directory: build-fuzz next to $FLASHSTATE_BUILD_DIR (default ./build), or $FLASHSTATE_FUZZ_DIR.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FLASHSTATE_FUZZ_DIR:-$(dirname "${FLASHSTATE_BUILD_DIR:-$repo/build}")/build-fuzz}"
seconds="${FUZZ_SECONDS:-45}"
jobs="${FUZZ_JOBS:-1}"
targets=("$@")
((${#targets[@]})) || targets=(fuzz_attention fuzz_paged fuzz_merge fuzz_sinks fuzz_lse fuzz_quant fuzz_cache)

packages=(clang-14 libclang-rt-14-dev cmake ninja-build)
. "$repo/scripts/lib/packages.sh"
install_missing_packages fuzz "${packages[@]}"

start=$(date +%s)
CC=clang-14 CXX=clang++-14 cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_FLAGS_DEBUG="-O1 -g" -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DFLASHSTATE_SANITIZE=address,undefined \
  -DFLASHSTATE_BUILD_FUZZERS=ON -DFLASHSTATE_BUILD_TESTS=OFF -DFLASHSTATE_BUILD_TOOLS=OFF \
  -DFLASHSTATE_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" --target "${targets[@]}"
echo "fuzz: build took $(($(date +%s) - start)) s"

export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Runs one target; writes its one-line result to $work/<target>.result and its log to $work/<target>.log.
fuzz_one() {
  local t="$1" bin="$build/fuzz/$1" log="$work/$1.log"
  local regressions=("$repo/fuzz/regressions/$t"/*)
  if [ -e "${regressions[0]}" ] && ! "$bin" "${regressions[@]}" >"$log" 2>&1; then
    echo "$t: FAILED on a saved reproducer (fuzz/regressions/$t)" >"$work/$t.result"
    return 1
  fi
  mkdir -p "$work/corpus-$t"
  cp "$repo/fuzz/corpus/$t"/* "$work/corpus-$t/" 2>/dev/null || true
  if ! "$bin" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$artifacts/$t-" "$work/corpus-$t" >"$log" 2>&1; then
    echo "$t: FAILED, input saved as $(grep -o "$artifacts/$t-[^ ]*" "$log" | tail -1)" >"$work/$t.result"
    return 1
  fi
  local execs cov
  execs="$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")"
  cov="$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 | sed -E 's/.*(cov: [0-9]+ ft: [0-9]+ corp: [^ ]+).*/\1/' || true)"
  echo "$t: $execs executions in ${seconds} s, $cov" >"$work/$t.result"
}

failed=0
for t in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
  fuzz_one "$t" &
done
wait || true

for t in "${targets[@]}"; do
  result="$(cat "$work/$t.result" 2>/dev/null || echo "$t: no result")"
  echo "fuzz: $result"
  if [[ "$result" != *executions* ]]; then
    failed=1
    # The report: the sanitizer's or the property's message and the stack, without libFuzzer's progress lines.
    grep -vE '^(#[0-9]+|INFO:|MS:|\s*NEW_FUNC)' "$work/$t.log" | head -60 | sed "s/^/fuzz: $t | /"
  fi
done
echo "fuzz: took $(($(date +%s) - start)) s"
exit "$failed"
