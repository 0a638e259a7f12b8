#!/usr/bin/env bash
# tests/kernel-seeds.sh [runs] [filter] — the op-table kernel cases on the emulated device, `runs` times
# (default 50), each in a fresh process with a fresh random seed (printed). Stops at the first failing
# run and prints the command that replays it exactly (same seed → same inputs for every case).
# Extra checks: L4EMU_SELFTEST_ARGS="--check all" runs them under the emulator's checker.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${1:-50}"; filter="${2:-*}"
cli="$root/src/Llama4Native.Cli/bin/${CONFIG:-Release}/net10.0/llama4.dll"
for ((i = 1; i <= runs; i++)); do
  seed=$(od -An -N4 -tu4 /dev/urandom | tr -d ' '); seed=$((seed % 2147483647))
  start=$(date +%s)
  out="$(dotnet "$cli" selftest --device emu --seed "$seed" --filter "$filter" ${L4EMU_SELFTEST_ARGS:-} 2>&1)"
  rc=$?
  echo "run $i/$runs seed $seed: $(echo "$out" | tail -1) ($(( $(date +%s) - start )) s)"
  if [[ $rc -ne 0 ]]; then
    echo "$out" | grep -vE ' ok$'
    echo "replay: dotnet $cli selftest --device emu --seed $seed --filter '$filter' ${L4EMU_SELFTEST_ARGS:-}"
    exit 1
  fi
done
echo "kernel-seeds: $runs runs passed"
