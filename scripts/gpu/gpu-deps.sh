#!/bin/bash
# Bundle the Debian headers and libraries that qkd-train needs besides LibTorch into ./.gpudeps,
# so the tree can be built on a CUDA machine whose only LibTorch is the one inside its PyTorch wheel
# and which cannot install packages. Run from the repository root on this (Debian 12) machine:
#   bash scripts/gpu/gpu-deps.sh
#
# Then, on the CUDA machine (x86-64, g++ 13, CMake 4, PyTorch 2.x with CUDA):
#   TP=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
#   cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release \
#         -DCMAKE_PREFIX_PATH="$TP;$PWD/.gpudeps/usr" \
#         -DCMAKE_INCLUDE_PATH=$PWD/.gpudeps/usr/include \
#         -DCMAKE_LIBRARY_PATH=$PWD/.gpudeps/usr/lib/x86_64-linux-gnu
#   cmake --build build-cuda -j 16
#   export LD_LIBRARY_PATH=$PWD/.gpudeps/usr/lib/x86_64-linux-gnu:$LD_LIBRARY_PATH
# This exact combination (CLI11 2.1, nlohmann/json 3.11, spdlog 1.10 with fmt 9, sentencepiece 0.1.97,
# PyTorch 2.11 + CUDA 13) was seen to configure, build and run there. CMake 4 refuses
# cmake_minimum_required below 3.5. GoogleTest 1.12 (libgtest-dev: static libgtest.a and its CMake
# package, lib/x86_64-linux-gnu/cmake/GTest) is bundled too, so that the device check can build the
# tests labelled `cuda` there (-DGTest_DIR=$PWD/.gpudeps/usr/lib/x86_64-linux-gnu/cmake/GTest).
set -euo pipefail
pkgs="libcli11-dev nlohmann-json3-dev libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libsentencepiece-dev libsentencepiece0
      libpcre2-dev libpcre2-8-0 libicu-dev libicu72 libxxhash-dev googletest libgtest-dev"
dir=.gpudeps
rm -rf "$dir" && mkdir -p "$dir/debs"
(cd "$dir/debs" && apt-get download $pkgs >/dev/null)
for f in "$dir"/debs/*.deb; do dpkg -x "$f" "$dir"; done
rm -rf "$dir/debs"
# The device call carries at most 64 MiB: keep GoogleTest's static libraries, drop every other archive,
# the docs, GoogleTest's sources and the ICU parts qkd-train does not link (it uses libicuuc alone).
lib="$dir/usr/lib/x86_64-linux-gnu"
find "$lib" -name '*.a' ! -name 'libg[mt]*' -delete
rm -rf "$dir/usr/share" "$dir/usr/src" "$lib"/libicu{i18n,io,test}*
# .gitignore names /.gpudeps/, so git leaves the bundle alone (no write to .git/info/exclude, which in
# a worktree is a file's pointer away).
[ -f "$dir/usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake" ] || { echo "GoogleTest missing from $dir" >&2; exit 1; }
echo "bundled into $dir ($(du -sh "$dir" | cut -f1)); name it in the device call's carry list"
