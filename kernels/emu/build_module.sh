#!/usr/bin/env bash
# kernels/emu/build_module.sh <file.cu> <outdir>  ->  <outdir>/lib<name>.so (needs <outdir>/libl4emu.so)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 <file.cu> <outdir>" >&2; exit 2; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kernels=$(dirname "$here")
src=$1; out=$(mkdir -p "$2" && cd "$2" && pwd)
name=$(basename "$src" .cu)
"$here/gen_module.sh" "$src" "$out/$name.emu.cpp"
g++ -O2 -std=c++17 -fPIC -shared -fno-strict-aliasing -fvisibility=hidden -fvisibility-inlines-hidden -fno-gnu-unique \
    -include "$here/emu.h" -DCUDA_EMU -I "$kernels" \
    -o "$out/lib$name.so" "$out/$name.emu.cpp" -L "$out" -ll4emu -Wl,-rpath,'$ORIGIN'
