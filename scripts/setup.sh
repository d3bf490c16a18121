#!/usr/bin/env bash
# Installs what the build needs (Debian 12 packages, only the missing ones), builds flashstate, then:
#   bash scripts/setup.sh demo   runs `flashstate demo`
#   bash scripts/setup.sh test   runs the test suite (ctest); exits non-zero if any test fails
#   bash scripts/setup.sh build  only builds
# The build directory is ./build unless FLASHSTATE_BUILD_DIR names another one.
set -euo pipefail

mode="${1:-demo}"
case "$mode" in
  demo | test | build) ;;
  *) echo "usage: bash scripts/setup.sh demo|test|build" >&2; exit 2 ;;
esac

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FLASHSTATE_BUILD_DIR:-$repo/build}"

# Debian packages: the toolchain, the build tools, GoogleTest (with GoogleMock), Google Benchmark, and pkgconf (CI
# builds a program against the installed library through its pkg-config file).
packages=(cmake ninja-build gcc g++ libgtest-dev libgmock-dev libbenchmark-dev pkgconf)
. "$repo/scripts/lib/packages.sh"
install_missing_packages setup "${packages[@]}"

cmake -S "$repo" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
if [ "$mode" = demo ]; then
  cmake --build "$build" --target flashstate_cli
  exec "$build/tools/flashstate/flashstate" demo
fi

cmake --build "$build"
if [ "$mode" = test ]; then
  # -j2: the tests are small; each one that uses threads takes every core for short bursts only.
  exec ctest --test-dir "$build" --output-on-failure -j2
fi
