#!/usr/bin/env bash
# tests/emu/run.sh [outdir] — builds libl4emu.so + the primitives module + selftest, runs the selftest.
# Last line of output: "N passed, N failed"; exit status non-zero on failure.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$root/artifacts/emu-selftest}
mkdir -p "$out"
g++ -O2 -std=c++17 -fPIC -shared -fno-strict-aliasing -Wall -Wextra -Wl,-soname,libl4emu.so \
    -o "$out/libl4emu.so" "$root/kernels/emu/runtime.cpp" "$root/kernels/emu/switch_x86_64.S" -lpthread
"$root/kernels/emu/build_module.sh" "$root/tests/kernels/primitives.cu" "$out"
g++ -O2 -std=c++17 -Wall -Wextra -o "$out/selftest" "$root/tests/emu/selftest.cpp" -L "$out" -ll4emu -ldl -Wl,-rpath,"$out"
exec timeout 120 "$out/selftest" "$out/libprimitives.so"
