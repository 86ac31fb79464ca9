#!/usr/bin/env bash
# scripts/bootstrap.sh on a machine where none of the packages is installed, in a fresh copy of the
# tree, with stub dpkg-query, apt-get, sudo, id, cmake, ctest and qkd-train on a PATH that holds
# nothing else but a few core tools: nothing is installed or built for real.
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
for tool in bash env tr dirname nproc cat mkdir touch chmod grep rm; do
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
fi
exit 0'
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
  (cd "$work" && env -i PATH="$stubs:$tools" STUB_LOG="$tree/log" STUB_STATE="$tree/state" "$@" \
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

# 2. Bare machine, `run`: only the qkd-train target, then the main job.
new_tree bare-run; run_bootstrap run
check "bare run: exit 0 (stderr: $err)" test "$rc" -eq 0
check "bare run: builds only qkd-train" logged '^cmake --build build --target qkd-train'
check "bare run: runs the main job" logged '^qkd-train --config configs/tiny-kjv.json'
check "bare run: no ctest" not_logged '^ctest'

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
new_tree installed; run_bootstrap test STUB_INSTALLED=1
check "installed: exit 0 (stderr: $err)" test "$rc" -eq 0
check "installed: apt-get skipped" not_logged '^apt-get'
check "installed: still builds and tests" logged '^ctest'

# 8. A failing build names itself.
new_tree build-fails
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
