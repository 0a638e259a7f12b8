#!/usr/bin/env bash
# Runs every test and ends with the plain summary line "tests: N passed, N failed, N skipped":
#   1. the emulator's native selftest (tests/emu/run.sh: barriers, shuffles, mma/ldmatrix layouts, misuse
#      detection), when the sources are here (not in the GPU bundle);
#   2. the NUnit suite (Microsoft Testing Platform executable; works with the bare runtime, no SDK).
#   tests/run-tests.sh <Llama4Native.Tests.dll> [--filter EXPR] [other MTP options]
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dll="$1"; shift
log="$(mktemp)"; emu_log="$(mktemp)"
emu_passed=0; emu_failed=0; rc_emu=0
if [[ -x "$here/emu/run.sh" && $# -eq 0 ]]; then
  echo "== emulator selftest (tests/emu/run.sh)"
  "$here/emu/run.sh" 2>&1 | tee "$emu_log"
  rc_emu=${PIPESTATUS[0]}
  line="$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$emu_log" | tail -1)"
  emu_passed=$(echo "$line" | grep -oE '^[0-9]+' || echo 0)
  emu_failed=$(echo "$line" | grep -oE '[0-9]+ failed' | grep -oE '[0-9]+' || echo 1)
  [[ $rc_emu -ne 0 && $emu_failed -eq 0 ]] && emu_failed=1
fi
echo "== NUnit suite"
# --no-ansi, and escapes stripped anyway: a CI that forces colour must not hide the summary from the parser.
dotnet "$dll" --no-progress --no-ansi --output detailed "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
num() { sed -E 's/\x1b\[[0-9;]*[A-Za-z]//g' "$log" | grep -E "^\s*$1:\s*[0-9]+" | tail -1 | grep -oE '[0-9]+' || echo 0; }
total=$(num total); failed=$(num failed); passed=$(num succeeded); skipped=$(num skipped)
rm -f "$log" "$emu_log"
echo
echo "emulator selftest: $emu_passed passed, $emu_failed failed; NUnit: $passed passed, $failed failed, $skipped skipped"
echo "tests: $((passed + emu_passed)) passed, $((failed + emu_failed)) failed, $skipped skipped"
if [[ "$total" == 0 ]]; then echo "run-tests.sh: no NUnit test ran" >&2; exit 1; fi
(( rc != 0 )) && exit $rc
exit $rc_emu
