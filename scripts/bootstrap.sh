#!/usr/bin/env bash
# Fresh Debian 12 -> installed packages -> Release build -> the main job or the test suite.
#   bash scripts/bootstrap.sh run    # builds qkd-train only, then the main job (configs/tiny-kjv.json)
#   bash scripts/bootstrap.sh test   # builds everything, then the whole test suite with ctest
# Every failure names the command (and the packages) that failed before the non-zero exit.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

say() { echo "bootstrap: $*" >&2; }
fail() { say "error: $*"; exit 1; }
# Anything not handled below still names itself instead of ending the script silently.
trap 'rc=$?; say "error: \`$BASH_COMMAND\` failed (exit $rc)"; exit $rc' ERR

mode=${1:-run}
case "$mode" in
  run|test) ;;
  *) say "usage: bash scripts/bootstrap.sh run|test"; exit 2 ;;
esac

# The README's package list (tests/setup/test_bootstrap.sh checks that the two agree).
packages=(build-essential cmake libtorch-dev libopenblas0-openmp libcli11-dev nlohmann-json3-dev libspdlog-dev
          libsentencepiece-dev libgtest-dev)

# dpkg-query exits 1 for a package it has never heard of; that is "missing", not an error.
missing_packages() {
  local package status
  for package in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null) || status=""
    [[ "$status" == ii* ]] || echo "$package"
  done
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    fail "not root and sudo is not installed: run as root, or install sudo, to run: $*"
  fi
}

install_missing_packages() {
  command -v dpkg-query >/dev/null 2>&1 || fail "dpkg-query not found: this set-up expects Debian 12"
  local missing
  missing=$(missing_packages | tr '\n' ' ')
  if [ -z "${missing// /}" ]; then
    say "all packages installed: ${packages[*]}"
    return
  fi
  say "installing: $missing"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
    || fail "\`apt-get update\` failed; the packages still missing are: $missing"
  # shellcheck disable=SC2086  # one word per package
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing \
    || fail "\`apt-get install\` failed for: $missing"
  missing=$(missing_packages | tr '\n' ' ')
  [ -z "${missing// /}" ] || fail "still not installed after apt-get install: $missing"
}

install_missing_packages

# `run` needs only the binary; `test` builds every test executable too (most of the build time).
jobs=${QKD_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release || fail "\`cmake\` configure failed (see above)"
case "$mode" in
  run)
    cmake --build build --target qkd-train -j "$jobs" || fail "\`cmake --build build --target qkd-train\` failed"
    ./build/qkd-train --config configs/tiny-kjv.json || fail "the main job (configs/tiny-kjv.json) failed"
    ;;
  test)
    cmake --build build -j "$jobs" || fail "\`cmake --build build\` failed"
    ctest --test-dir build --output-on-failure -j "${QKD_TEST_JOBS:-$jobs}" || fail "\`ctest\` reported failures"
    ;;
esac
