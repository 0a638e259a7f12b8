#!/usr/bin/env bash
# Llama4Native build entry point. Fresh Debian 12 with the .NET 10 SDK and g++ is enough: everything else
# (NVRTC 12.4 from Debian trixie non-free, NuGet packages) is fetched into ignored folders on first use.
#
#   ./build.sh                 restore + build (Release)
#   ./build.sh test [args]     every test (kernels on the emulated device; on CUDA too when a GPU is present)
#   ./build.sh run [args]      the CLI (`llama4 run` on the bundled tiny model when no --model is given)
#   ./build.sh bench [filter]  BenchmarkDotNet benchmarks (e.g. './build.sh bench "*Gemm*"')
#   ./build.sh kernels         compile every kernel with NVRTC for sm_90a and sm_80; print registers/spills/smem
#   ./build.sh llama4 [args]   any CLI verb (`./build.sh llama4 --help`)
#   ./build.sh nccl            fetch NCCL 2.22.3 (Debian trixie contrib libnccl2) into .cache/nccl (several GPUs; `test` does too)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$ROOT/.cache"
CONFIG="${CONFIG:-Release}"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
export LLAMA4_CACHE="${LLAMA4_CACHE:-$CACHE}"

# --- NVRTC 12.4 (Debian trixie non-free), pinned and checksum-verified -----------------------------------
NVRTC_VERSION="12.4.127~12.4.1-2"
declare -A NVRTC_SHA256=(
  [libnvrtc12]=db76acbd9ad53eae57291114b615ed21551592dee0b1160990a33066d86c251c
  [libnvrtc-builtins12.4]=c4f9ea43c3e176a9f46b50718d546adb0dc7344432cd7d8b1483692e0416d24c
)
NVRTC_DIR="$CACHE/nvrtc"
NVRTC_LIB="$NVRTC_DIR/usr/lib/x86_64-linux-gnu/libnvrtc.so.12"

# fetch_deb DEST COMPONENT LABEL REQUIRED|OPTIONAL PKG=VERSION=SHA256 ...
# Downloads pinned .debs from Debian trixie COMPONENT (the system's own mirror host, through a private sources list —
# never the system's), checks each against its SHA-256, and unpacks them all into DEST (DEST.tmp, then a rename), marked
# DEST/.verified. A failed download is fatal when REQUIRED and a warning (return 1) when OPTIONAL; a checksum mismatch
# is always fatal.
fetch_deb() {
  local dest="$1" component="$2" label="$3" need="$4"; shift 4
  local apt="$CACHE/apt-$component" mirror spec pkg ver sha deb names=()
  mirror="$(grep -rhE '^[[:space:]]*(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null \
            | grep -oE 'https?://[^ ]+/debian/?' | grep -v security | head -1 || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/debs"
  echo "deb ${mirror%/} trixie $component" > "$apt/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt" -o Debug::NoLocking=1
              -o APT::Sandbox::User="$(id -un)")
  for spec in "$@"; do IFS='=' read -r pkg ver sha <<< "$spec"; names+=("$pkg=$ver"); rm -f "$apt/debs/${pkg}_"*.deb; done
  if ! { apt-get "${opts[@]}" -qq update >&2 && (cd "$apt/debs" && apt-get "${opts[@]}" -qq download "${names[@]}" >&2); }; then
    if [[ "$need" == OPTIONAL ]]; then echo "build.sh: warning: could not fetch $label" >&2; return 1; fi
    echo "build.sh: could not fetch $label from $mirror (trixie $component)" >&2; exit 1
  fi
  rm -rf "$dest.tmp"; mkdir -p "$dest.tmp"
  for spec in "$@"; do
    IFS='=' read -r pkg ver sha <<< "$spec"
    deb="$(ls "$apt/debs/${pkg}_"*.deb)" || { echo "build.sh: apt-get downloaded no $pkg .deb" >&2; exit 1; }
    echo "$sha  $deb" | sha256sum -c --quiet - || { echo "build.sh: checksum mismatch for $deb" >&2; exit 1; }
    dpkg -x "$deb" "$dest.tmp" || { echo "build.sh: could not unpack $deb" >&2; exit 1; }
  done
  rm -rf "$dest"; mv "$dest.tmp" "$dest"; touch "$dest/.verified"
  rm -f "$apt/debs/"*.deb
}

ensure_nvrtc() {
  if [[ -n "${LLAMA4_NVRTC:-}" ]]; then return; fi                 # the user chose one
  if [[ -f "$NVRTC_LIB" && -f "$NVRTC_DIR/.verified" ]]; then export LLAMA4_NVRTC="$NVRTC_LIB"; return; fi
  if [[ "$(uname -m)" != x86_64 ]]; then
    echo "build.sh: no NVRTC fetched on $(uname -m) (the Debian packages are amd64); kernels run on the emulator only" >&2
    return
  fi
  echo "build.sh: fetching NVRTC $NVRTC_VERSION (Debian trixie non-free) into $NVRTC_DIR" >&2
  fetch_deb "$NVRTC_DIR" non-free "NVRTC $NVRTC_VERSION" REQUIRED \
    "libnvrtc12=$NVRTC_VERSION=${NVRTC_SHA256[libnvrtc12]}" \
    "libnvrtc-builtins12.4=$NVRTC_VERSION=${NVRTC_SHA256[libnvrtc-builtins12.4]}"
  export LLAMA4_NVRTC="$NVRTC_LIB"
}

# --- NCCL 2.22.3 (Debian trixie contrib), pinned and checksum-verified: several CUDA devices ----------------------
# Optional: without it everything but several CUDA devices works, so a failed fetch only warns. The build needs
# glibc ≥ 2.38 to load (Debian 13); on older systems set LLAMA4_NCCL to another libnccl.so.2 (e.g. pip's nvidia-nccl-cu12).
NCCL_VERSION="2.22.3-1-1"
NCCL_SHA256=5d4202de81f28cfc82df989fe9634f941e777e782f69a035bc7db11c8d6062d2
NCCL_DIR="$CACHE/nccl"
NCCL_LIB="$NCCL_DIR/usr/lib/x86_64-linux-gnu/libnccl.so.2"

ensure_nccl() {
  if [[ -n "${LLAMA4_NCCL:-}" || ( -f "$NCCL_LIB" && -f "$NCCL_DIR/.verified" ) ]]; then return; fi
  [[ "$(uname -m)" == x86_64 ]] || return 0
  echo "build.sh: fetching NCCL $NCCL_VERSION (Debian trixie contrib) into $NCCL_DIR" >&2
  fetch_deb "$NCCL_DIR" contrib "libnccl2 $NCCL_VERSION (several CUDA devices need it; everything else works)" OPTIONAL \
    "libnccl2=$NCCL_VERSION=$NCCL_SHA256" || return 0
}

need() { command -v "$1" >/dev/null || { echo "build.sh: '$1' is required ($2)" >&2; exit 1; }; }

build() {
  need dotnet "install the .NET 10 SDK"
  need g++ "the emulated device compiles kernels with g++: apt-get install g++"
  # MSBuild's output goes to stderr: stdout carries only what the CLI prints (a reply, JSON), so
  # `./build.sh run … > reply.txt` or `| jq` see nothing else.
  dotnet build "$ROOT/Llama4Native.sln" -c "$CONFIG" -nologo -clp:NoSummary -v:q "$@" >&2
}

cli() { dotnet "$ROOT/src/Llama4Native.Cli/bin/$CONFIG/net10.0/llama4.dll" "$@"; }

cmd="${1:-}"; [[ $# -gt 0 ]] && shift
case "$cmd" in
  "")      ensure_nvrtc; build ;;
  test)    ensure_nvrtc; ensure_nccl; build
           "$ROOT/tests/run-tests.sh" "$ROOT/tests/Llama4Native.Tests/bin/$CONFIG/net10.0/Llama4Native.Tests.dll" "$@" ;;
  run)     ensure_nvrtc; build; cli run "$@" ;;
  llama4)  ensure_nvrtc; build; cli "$@" ;;
  kernels) ensure_nvrtc; build; cli kernels "$@" ;;
  nccl)    ensure_nccl; ls -l "$NCCL_LIB" >&2 ;;
  bench)   ensure_nvrtc; build
           dotnet "$ROOT/bench/Llama4Native.Bench/bin/$CONFIG/net10.0/Llama4Native.Bench.dll" --filter "${1:-*}" "${@:2}" ;;
  *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
