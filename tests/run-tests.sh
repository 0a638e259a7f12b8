#!/usr/bin/env bash
# Runs the NUnit test executable (Microsoft Testing Platform) and ends with the plain summary line
# "N passed, N failed, N skipped". Works with the bare .NET runtime (no SDK), as on the GPU machine.
#   tests/run-tests.sh <Llama4Native.Tests.dll> [--filter EXPR] [other MTP options]
set -uo pipefail
dll="$1"; shift
log="$(mktemp)"
dotnet "$dll" --no-progress --output detailed "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
num() { grep -E "^\s*$1:\s*[0-9]+" "$log" | tail -1 | grep -oE '[0-9]+' || echo 0; }
total=$(num total); failed=$(num failed); passed=$(num succeeded); skipped=$(num skipped)
rm -f "$log"
echo
echo "tests: $passed passed, $failed failed, $skipped skipped"
if [[ "$total" == 0 ]]; then echo "run-tests.sh: no test ran" >&2; exit 1; fi
exit $rc
