#!/usr/bin/env bash
# Fresh Debian 12 -> installed packages -> Release build -> the main job or the test suite.
#   bash scripts/bootstrap.sh run    # the main job: KD-QAT of the shipped teacher (configs/tiny-kjv.json)
#   bash scripts/bootstrap.sh test   # the whole test suite with ctest
set -euo pipefail
mode=${1:-run}
cd "$(dirname "$0")/.."

packages="build-essential cmake libtorch-dev libopenblas0-openmp libcli11-dev nlohmann-json3-dev libspdlog-dev
libsentencepiece-dev libgtest-dev"
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
missing=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $packages 2>/dev/null | awk '$1 != "ii" {print $2}' || true)
installed=$(dpkg-query -W -f='${Package}\n' $packages 2>/dev/null | wc -l)
if [ -n "$missing" ] || [ "$installed" -lt "$(echo $packages | wc -w)" ]; then
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq $packages
fi

# Two cores and LibTorch headers: a precompiled header and -j2 keep the build within ~15 minutes.
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "${QKD_BUILD_JOBS:-2}"

case "$mode" in
  run)  ./build/qkd-train --config configs/tiny-kjv.json ;;
  test) ctest --test-dir build --output-on-failure -j "${QKD_TEST_JOBS:-2}" ;;
  *)    echo "usage: $0 run|test" >&2; exit 2 ;;
esac
