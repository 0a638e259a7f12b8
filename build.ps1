#!/usr/bin/env pwsh
# Llama4Native build entry point for Windows (mirrors build.sh). NVRTC comes from an installed CUDA toolkit
# (CUDA_PATH), or LLAMA4_NVRTC pointing at nvrtc64_*.dll. The emulated device needs g++ (x86-64 Linux only),
# so on Windows kernel tests run on CUDA and the emulator's tests are skipped.
#
#   ./build.ps1                 restore + build (Release)
#   ./build.ps1 test [args]     every test
#   ./build.ps1 run [args]      the CLI (`llama4 run`)
#   ./build.ps1 bench [filter]  BenchmarkDotNet benchmarks
#   ./build.ps1 kernels         compile every kernel with NVRTC for sm_90a and sm_80
#   ./build.ps1 llama4 [args]   any CLI verb
param([string]$Verb = "", [Parameter(ValueFromRemainingArguments = $true)][string[]]$Rest = @())
$ErrorActionPreference = "Stop"
$Root = $PSScriptRoot
$Config = if ($env:CONFIG) { $env:CONFIG } else { "Release" }
$env:DOTNET_CLI_TELEMETRY_OPTOUT = "1"; $env:DOTNET_NOLOGO = "1"
if (-not $env:LLAMA4_CACHE) { $env:LLAMA4_CACHE = Join-Path $Root ".cache" }

function Find-Nvrtc {
  if ($env:LLAMA4_NVRTC) { return }
  if ($env:CUDA_PATH) {
    $dll = Get-ChildItem (Join-Path $env:CUDA_PATH "bin") -Filter "nvrtc64_*.dll" -ErrorAction SilentlyContinue |
           Where-Object { $_.Name -notlike "*builtins*" } | Sort-Object Name | Select-Object -Last 1
    if ($dll) { $env:LLAMA4_NVRTC = $dll.FullName; return }
  }
  Write-Warning "NVRTC not found: install the CUDA toolkit (CUDA_PATH) or set LLAMA4_NVRTC; kernels cannot compile for the GPU."
}

function Build { dotnet build (Join-Path $Root "Llama4Native.sln") -c $Config -nologo -v:q @args; if ($LASTEXITCODE) { exit $LASTEXITCODE } }
function Cli { dotnet (Join-Path $Root "src/Llama4Native.Cli/bin/$Config/net10.0/llama4.dll") @args; exit $LASTEXITCODE }

switch ($Verb) {
  ""      { Find-Nvrtc; Build }
  "test"  { Find-Nvrtc; Build
            $dll = Join-Path $Root "tests/Llama4Native.Tests/bin/$Config/net10.0/Llama4Native.Tests.dll"
            $out = dotnet $dll --no-progress --no-ansi --output detailed @Rest 2>&1 | Tee-Object -Variable lines
            $rc = $LASTEXITCODE
            $n = @{}; foreach ($k in "total","failed","succeeded","skipped") { $m = $lines | Select-String "^\s*${k}:\s*(\d+)" | Select-Object -Last 1; $n[$k] = if ($m) { $m.Matches[0].Groups[1].Value } else { 0 } }
            Write-Output "tests: $($n.succeeded) passed, $($n.failed) failed, $($n.skipped) skipped"
            exit $rc }
  "run"     { Find-Nvrtc; Build; Cli run @Rest }
  "llama4"  { Find-Nvrtc; Build; Cli @Rest }
  "kernels" { Find-Nvrtc; Build; Cli kernels @Rest }
  "bench"   { Find-Nvrtc; Build
              $f = if ($Rest.Count -gt 0) { $Rest[0] } else { "*" }
              dotnet (Join-Path $Root "bench/Llama4Native.Bench/bin/$Config/net10.0/Llama4Native.Bench.dll") --filter $f; exit $LASTEXITCODE }
  default   { Get-Content $PSCommandPath | Select-Object -Skip 1 -First 10; exit 2 }
}
