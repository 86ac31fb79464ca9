#!/usr/bin/env bash
# Nothing the suite, the scripts or the program read may live outside the repository: a clone with no
# shared/ folder beside it (as every user outside the team has it) must pass `bash scripts/bootstrap.sh
# test`. This fails, naming file and line, when a tracked source, test, script, config or document
# names the team's reference folder or its environment variable. (.ci/run also hides a shared/ beside
# the clone while the suite runs, so a read that slips past this check fails there.)
#   bash tests/setup/test_self_contained.sh SOURCE_DIR
set -uo pipefail
src=$(cd "${1:?usage: test_self_contained.sh SOURCE_DIR}" && pwd)
cd "$src" || exit 1
# The pattern is assembled so that this file does not match itself.
outside='\.\./'"shared"'|QKD_'"SHARED"'_DIR|/work/'"shared"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  files=$(git ls-files --cached --others --exclude-standard -- src include tests scripts benchmarks configs cmake docs \
            CMakeLists.txt README.md .ci assets)
else
  files=$(find src include tests scripts benchmarks configs cmake docs CMakeLists.txt README.md .ci assets -type f)
fi
hits=$(printf '%s\n' "$files" | grep -v '^$' | xargs -d '\n' grep -nIE "$outside" -- 2>/dev/null)
if [ -n "$hits" ]; then
  echo "FAIL: these lines name a path outside the repository:"
  echo "$hits"
  exit 1
fi
echo "ok: $(printf '%s\n' "$files" | grep -vc '^$') files name nothing outside the repository"
