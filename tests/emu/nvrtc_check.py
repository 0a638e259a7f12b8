#!/usr/bin/env python3
"""Dev tool (not CI): compile .cu files with NVRTC 12.4 for sm_90a and sm_80, the way the runtime does
(-default-device --std=c++17, common.cuh passed as an in-memory header), and check:
  * no warnings or errors in the program log,
  * 0 bytes of spills in every kernel (ptxas -v),
  * the PTX contains the instructions common.cuh is supposed to emit for that arch.
usage: tests/emu/nvrtc_check.py [file.cu ...]   (default: tests/kernels/primitives.cu, with PTX checks)
NVRTC: $L4_NVRTC_DIR or .cache/nvrtc/usr/lib/x86_64-linux-gnu (libnvrtc.so.12 + libnvrtc-builtins.so.12.4).
"""
import ctypes
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIBDIR = os.environ.get("L4_NVRTC_DIR", os.path.join(ROOT, ".cache/nvrtc/usr/lib/x86_64-linux-gnu"))

# Instructions expected in the PTX of primitives.cu per arch (fp8 cvt needs sm_89+; sm_80 uses software).
COMMON = ["mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
          "ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16", "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16",
          "ldmatrix.sync.aligned.m8n8.x2.shared.b16", "cp.async.cg.shared.global", "cp.async.commit_group",
          "cp.async.wait_group", "cp.async.wait_all", "cvt.rn.bf16x2.f32", "cvt.rn.bf16.f32"]
EXPECT = {"sm_90a": COMMON + ["cvt.rn.satfinite.e4m3x2.f32", "cvt.rn.f16x2.e4m3x2", "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32"], "sm_80": COMMON}
ABSENT = {"sm_90a": [], "sm_80": ["e4m3x2", "e4m3.e4m3"]}


def load():
    ctypes.CDLL(os.path.join(LIBDIR, "libnvrtc-builtins.so.12.4"), mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(os.path.join(LIBDIR, "libnvrtc.so.12"))
    lib.nvrtcGetErrorString.restype = ctypes.c_char_p
    return lib


def compile_one(lib, path, arch):
    src = open(path, "rb").read()
    hdr = open(os.path.join(ROOT, "kernels/common.cuh"), "rb").read()
    prog = ctypes.c_void_p()
    names = (ctypes.c_char_p * 1)(b"common.cuh")
    bodies = (ctypes.c_char_p * 1)(hdr)
    r = lib.nvrtcCreateProgram(ctypes.byref(prog), src, os.path.basename(path).encode(), 1, bodies, names)
    assert r == 0, lib.nvrtcGetErrorString(r)
    opts = [b"--std=c++17", b"-default-device", ("-arch=" + arch).encode(), b"--ptxas-options=-v"]
    copts = (ctypes.c_char_p * len(opts))(*opts)
    rc = lib.nvrtcCompileProgram(prog, len(opts), copts)
    n = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(n))
    log = ctypes.create_string_buffer(n.value)
    lib.nvrtcGetProgramLog(prog, log)
    ptx = b""
    if rc == 0:
        lib.nvrtcGetPTXSize(prog, ctypes.byref(n))
        buf = ctypes.create_string_buffer(n.value)
        lib.nvrtcGetPTX(prog, buf)
        ptx = buf.value
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode(errors="replace"), ptx.decode(errors="replace")


def main(argv):
    files = argv[1:] or [os.path.join(ROOT, "tests/kernels/primitives.cu")]
    check_ptx = not argv[1:]
    lib = load()
    ok = True
    for path in files:
        for arch in ("sm_90a", "sm_80"):
            rc, log, ptx = compile_one(lib, path, arch)
            name = f"{os.path.relpath(path, ROOT)} [{arch}]"
            if rc != 0:
                print(f"FAIL {name}: compile error {rc}\n{log}")
                ok = False
                continue
            warnings = [l for l in log.splitlines() if re.search(r"warning|error", l, re.I)]
            spills = [int(a) + int(b) for a, b in re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)]
            regs = [int(x) for x in re.findall(r"Used (\d+) registers", log)]
            missing = [i for i in EXPECT[arch] if i not in ptx] if check_ptx else []
            present = [i for i in ABSENT[arch] if i in ptx] if check_ptx else []
            good = not warnings and sum(spills) == 0 and not missing and not present
            ok &= good
            print(f"{'ok  ' if good else 'FAIL'} {name}: {len(regs)} kernels, max {max(regs or [0])} registers, "
                  f"spill bytes {sum(spills)}, warnings {len(warnings)}, PTX {len(ptx)} chars")
            for w in warnings:
                print("     " + w)
            if check_ptx:
                print(f"     PTX has: {', '.join(i for i in EXPECT[arch] if i in ptx)}")
                if missing:
                    print(f"     MISSING: {', '.join(missing)}")
                if present:
                    print(f"     UNEXPECTED: {', '.join(present)}")
    print("nvrtc check:", "ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
