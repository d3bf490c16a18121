#!/usr/bin/env bash
# Builds flashstate with clang-14 under sanitizers (-O1 -g, assertions on) and runs the tests:
#   bash scripts/sanitize.sh asan   AddressSanitizer + UndefinedBehaviorSanitizer: the whole ctest suite at every
#                                   kernel level (portable, avx2, avx512: tests/CMakeLists.txt registers each test
#                                   once per level; ASan, unlike valgrind, runs AVX-512 code)
#   bash scripts/sanitize.sh tsan   ThreadSanitizer: the threaded tests (TSAN_TESTS below)
#   bash scripts/sanitize.sh        both
# Any sanitizer report aborts the test process, so the test fails and the script exits non-zero.
# Build directories: build-asan and build-tsan next to $FLASHSTATE_BUILD_DIR (default ./build), unless
# FLASHSTATE_ASAN_DIR / FLASHSTATE_TSAN_DIR name others.
set -euo pipefail

mode="${1:-all}"
case "$mode" in
  asan | tsan | all) ;;
  *) echo "usage: bash scripts/sanitize.sh [asan|tsan|all]" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_parent="$(dirname "${FLASHSTATE_BUILD_DIR:-$repo/build}")"
asan_dir="${FLASHSTATE_ASAN_DIR:-$build_parent/build-asan}"
tsan_dir="${FLASHSTATE_TSAN_DIR:-$build_parent/build-tsan}"

# The threaded tests run under TSan, at every kernel level: every test of test_threads (many API calls at once,
# n_threads 1..8, ith/nth parts on the caller's threads, the per-thread error message), test_kv_splits (KV pieces
# with n_threads 2, 3, all), test_nan_isolation (1 and 2) and test_golden (the default n_threads: every hardware
# thread), and test_cache_threads (appenders, readers and a save on one cache at once). Tests that pin
# n_threads = 1 exercise no threaded path and are left to the ASan run; so is test_allocations, whose own operator
# new cannot link next to TSan's. Test names: "avx2.Threads.LastErrorIsPerThread".
TSAN_TARGETS=(test_threads test_kv_splits test_nan_isolation test_golden test_cache_threads)
TSAN_TESTS='(^|[./])(Threads|KvSplits|NanIsolation|Golden|CacheThreads)\.'

# Debian packages: clang-14 and its sanitizer runtimes (libclang-rt-14-dev), plus what scripts/setup.sh needs.
packages=(clang-14 libclang-rt-14-dev cmake ninja-build libgtest-dev libgmock-dev)
. "$repo/scripts/lib/packages.sh"
install_missing_packages sanitize "${packages[@]}"

# halt_on_error/abort_on_error: the first report kills the process (the build also has -fno-sanitize-recover=all).
asan_checks="detect_leaks=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1"
export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:$asan_checks"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
export TSAN_OPTIONS="halt_on_error=1:abort_on_error=1:second_deadlock_stack=1"

configure() { # configure <dir> <sanitizers>
  CC=clang-14 CXX=clang++-14 cmake -S "$repo" -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_C_FLAGS_DEBUG="-O1 -g" -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
    -DFLASHSTATE_SANITIZE="$2" -DFLASHSTATE_BUILD_EXAMPLES=OFF >/dev/null
}

seconds() { date +%s; }

if [ "$mode" = asan ] || [ "$mode" = all ]; then
  start=$(seconds)
  configure "$asan_dir" address,undefined
  cmake --build "$asan_dir"
  echo "sanitize: asan build took $(($(seconds) - start)) s"
  start=$(seconds)
  echo "sanitize: ASan+UBSan, every test at every kernel level (this CPU's best: $(
    "$asan_dir/tools/flashstate/flashstate" version | awk '$1 == "isa" { print $2 }'))"
  ctest --test-dir "$asan_dir" --output-on-failure -j2 --no-tests=error
  echo "sanitize: asan tests took $(($(seconds) - start)) s"
fi

if [ "$mode" = tsan ] || [ "$mode" = all ]; then
  start=$(seconds)
  configure "$tsan_dir" thread
  cmake --build "$tsan_dir" --target "${TSAN_TARGETS[@]}"
  echo "sanitize: tsan build took $(($(seconds) - start)) s"
  start=$(seconds)
  echo "sanitize: TSan, tests matching $TSAN_TESTS"
  # -j1: the tests start their own threads; TSan on 2 cores is slow enough already.
  ctest --test-dir "$tsan_dir" --output-on-failure -R "$TSAN_TESTS" --no-tests=error
  echo "sanitize: tsan tests took $(($(seconds) - start)) s"
fi
echo "sanitize: no sanitizer report"
