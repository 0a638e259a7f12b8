#!/usr/bin/env bash
# kernels/emu/build.sh <outdir>
# Builds <outdir>/libl4emu.so and one <outdir>/lib<name>.so per kernels/*.cu (none is fine), in parallel.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 <outdir>" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kernels=$(dirname "$here")
out=$(mkdir -p "$1" && cd "$1" && pwd)
g++ -O2 -std=c++17 -fPIC -shared -fno-strict-aliasing -Wl,-soname,libl4emu.so \
    -o "$out/libl4emu.so" "$here/runtime.cpp" "$here/switch_x86_64.S" -lpthread
shopt -s nullglob
cus=("$kernels"/*.cu)
[ ${#cus[@]} -eq 0 ] && { echo "libl4emu.so built; no kernels/*.cu modules"; exit 0; }
printf '%s\n' "${cus[@]}" | xargs -P "$(nproc)" -I{} "$here/build_module.sh" {} "$out"
echo "built libl4emu.so and ${#cus[@]} module(s) in $out"
