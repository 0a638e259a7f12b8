#!/usr/bin/env bash
# The one prepared script for a machine with a GPU (H100/H200: CUDA driver, nvcc, PyTorch; no dotnet, no
# network; minutes of device time). Two halves:
#
#   bench/gpu-check.sh pack [DIR]        here (no GPU): build, and bundle the .NET runtime, the framework-
#                                        dependent CLI and test executables and precompiled sm_90a CUBINs
#                                        into DIR (default .gpu-bundle, git-ignored), checked to stay < 60 MiB.
#   bench/gpu-check.sh run [DIR] [OUT]   there: unpack, run every test (kernels on CUDA and the emulator),
#                                        time every kernel's perf cases with CUDA events, time PyTorch on the
#                                        same shapes, write OUT/report.md + OUT/*.json, print a short table.
#
# Device tool usage:  run(command="bench/gpu-check.sh run .gpu-bundle $OUT", carry=[".gpu-bundle"], timeout_s=540)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
verb="${1:-}"; shift || true

pack() {
  local dir; dir="$(realpath -m "${1:-$ROOT/.gpu-bundle}")"
  "$ROOT/build.sh"
  rm -rf "$dir"; mkdir -p "$dir/app"
  local cfg=Release
  cp -r "$ROOT/src/Llama4Native.Cli/bin/$cfg/net10.0" "$dir/app/cli"
  cp -r "$ROOT/tests/Llama4Native.Tests/bin/$cfg/net10.0" "$dir/app/tests"
  # Not the BenchmarkDotNet app (34 MB): GPU kernels are timed with CUDA events by `llama4 bench-kernels`.
  # Nor the test platform's localised message assemblies (cs/, de/, … ~3.5 MB): English is enough there.
  find "$dir/app" -mindepth 2 -maxdepth 2 -type d \( -name cs -o -name de -o -name es -o -name fr -o -name it -o -name ja \
       -o -name ko -o -name pl -o -name pt-BR -o -name ru -o -name tr -o -name zh-Hans -o -name zh-Hant -o -name TestResults \) \
       -exec rm -rf {} +
  # The runtime: the host, hostfxr and the shared frameworks this build targets (ASP.NET Core for `llama4 serve`
  # and its tests: the CLI and the test app reference Microsoft.AspNetCore.App; about +8 MiB packed, hence xz -9).
  local dn; dn="$(dirname "$(readlink -f "$(command -v dotnet)")")"
  local fw; fw="$(ls -d "$dn"/shared/Microsoft.NETCore.App/10.* | sort -V | tail -1)"
  local asp; asp="$(ls -d "$dn"/shared/Microsoft.AspNetCore.App/10.* | sort -V | tail -1)"
  XZ_OPT="-9 -T2" tar -C "$dn" -cJf "$dir/dotnet-runtime.tar.xz" dotnet host/fxr "shared/Microsoft.NETCore.App/$(basename "$fw")" \
      "shared/Microsoft.AspNetCore.App/$(basename "$asp")"
  # Precompiled CUBINs (NVRTC 12.4 here): the fallback when no NVRTC is found there; a newer NVRTC there
  # compiles for itself (the cache key carries the NVRTC version).
  LLAMA4_CACHE="$dir/cache" dotnet "$dir/app/cli/llama4.dll" kernels --arch sm_90a --quiet
  # The apps and the CUBIN cache compress ~3× with xz: one archive keeps the bundle under the carry limit (64 MiB).
  XZ_OPT="-9 -T2" tar -C "$dir" -cJf "$dir/app.tar.xz" app cache && rm -rf "$dir/app" "$dir/cache"
  cp "$ROOT/bench/gpu-check.sh" "$ROOT/bench/torch_compare.py" "$dir/"
  git -C "$ROOT" rev-parse HEAD > "$dir/COMMIT" 2>/dev/null || echo unknown > "$dir/COMMIT"
  local size; size=$(du -sm "$dir" | cut -f1)
  echo "gpu-check: bundle $dir is ${size} MiB (commit $(cat "$dir/COMMIT"))"
  if (( size >= 60 )); then echo "gpu-check: bundle exceeds 60 MiB" >&2; exit 1; fi
}

run() {
  local dir; dir="$(realpath "${1:-$ROOT/.gpu-bundle}")"
  local out; out="$(realpath -m "${2:-${OUT:-$ROOT/gpu-report}}")"
  mkdir -p "$out"
  local rt=/tmp/l4-dotnet; rm -rf "$rt"; mkdir -p "$rt"; tar -C "$rt" -xJf "$dir/dotnet-runtime.tar.xz"
  local app=/tmp/l4-app; rm -rf "$app"; mkdir -p "$app"; tar -C "$app" -xJf "$dir/app.tar.xz"
  export DOTNET_ROOT="$rt" PATH="$rt:$PATH" DOTNET_CLI_TELEMETRY_OPTOUT=1 LLAMA4_CACHE="$app/cache"
  local log="$out/log.txt"; : > "$log"
  {
    echo "# gpu-check $(date -u +%FT%TZ) commit $(cat "$dir/COMMIT")"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
  } | tee -a "$log"
  local t0=$SECONDS
  echo "== tests" | tee -a "$log"
  set +e
  bash -c "cd '$app/app/tests' && dotnet Llama4Native.Tests.dll --no-progress --no-ansi --output detailed" > "$out/tests.txt" 2>&1
  local trc=$?
  set -e
  grep -E "^\s*(total|failed|succeeded|skipped):" "$out/tests.txt" | tee -a "$log" || true
  grep -E "^\s*failed |Assert|error" "$out/tests.txt" | head -40 >> "$log" || true
  echo "tests exit code $trc ($((SECONDS - t0)) s)" | tee -a "$log"
  # Several devices on the one GPU (issue #14): NCCL found (the bundle has none: the locator takes PyTorch's
  # nvidia-nccl-cu12 wheel or LLAMA4_NCCL), a 1-rank NCCL smoke test (every collective), a rank joined through the TCP
  # rendezvous (ncclGetUniqueId → ncclCommInitRank) doing an all-reduce, and the model on cuda:0 through the
  # device-group path (DeviceGroup → ShardedWeights → ShardedTextGraph) giving the emulator's greedy tokens.
  echo "== several devices: NCCL 1-rank smoke test, rendezvous + ncclCommInitRank, the model on cuda:0 via the device group" | tee -a "$log"
  grep -E "(OneRankCollectivesOnCuda|NcclRankJoinsThroughTheRendezvous|TheModelOnCuda0ThroughTheDeviceGroupPath|LoadsAndAnswersWithoutAGpu)" -A2 "$out/tests.txt" \
    | grep -vE "^\s*at |^--$" | head -16 | tee -a "$log" || echo "(not in the test output)" | tee -a "$log"
  echo "== kernel benchmarks (CUDA events)" | tee -a "$log"
  dotnet "$app/app/cli/llama4.dll" bench-kernels --device cuda --json "$out/kernels.json" --shapes "$out/shapes.json" 2>&1 | tee -a "$log" || true
  if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    echo "== PyTorch on the same shapes" | tee -a "$log"
    python3 "$dir/torch_compare.py" "$out/shapes.json" "$out/torch.json" 2>&1 | tee -a "$log" || true
  else
    echo "== PyTorch not available: no comparison" | tee -a "$log"
  fi
  dotnet "$app/app/cli/llama4.dll" bench-report --kernels "$out/kernels.json" --torch "$out/torch.json" \
      --tests "$out/tests.txt" --out "$out/report.md" 2>&1 | tee -a "$log" || true
  # End to end at full size with no checkpoint (64 GB of disk there): Scout int4, weights generated on the device,
  # measured next to `llama4 plan`'s roofline model of the same configuration (measured ÷ modelled).
  echo "== end to end: Scout int4, synthetic (bench-e2e) vs the plan's model" | tee -a "$log"
  dotnet "$app/app/cli/llama4.dll" plan --preset scout --quantize int4 --context 4160 --bandwidth 4.8 --capture --json > "$out/plan-scout-int4.json" 2>> "$log" || true
  timeout 420 dotnet "$app/app/cli/llama4.dll" bench-e2e --preset scout --quantize int4 --synthetic --device cuda \
      --prompt-tokens 4096 --new-tokens 64 2>&1 | tee "$out/e2e-scout-int4.txt" | tee -a "$log" || true
  python3 - "$out/plan-scout-int4.json" "$out/e2e-scout-int4.txt" <<'PY' 2>&1 | tee -a "$log" || true
import json, re, sys
plan = json.load(open(sys.argv[1]))["decode"]["modelled_tokens_per_s"]
got = [float(m) for m in re.findall(r"decode .* at ([0-9.]+) tokens/s.*captured", open(sys.argv[2]).read())]
print(f"decode: measured {got[-1]:.1f} tokens/s (captured) / modelled {plan:.1f} = {got[-1] / plan:.2f}" if got else f"decode: modelled {plan:.1f} tokens/s; no measurement")
PY
  echo "gpu-check: done in $((SECONDS - t0)) s; report in $out"
}

case "$verb" in
  pack) pack "$@" ;;
  run)  run "$@" ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
