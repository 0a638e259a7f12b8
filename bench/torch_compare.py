#!/usr/bin/env python3
"""Times PyTorch on the same shapes as our kernel perf cases (run by bench/gpu-check.sh on the GPU machine).

usage: torch_compare.py shapes.json out.json
shapes.json is written by `llama4 bench-kernels --shapes`: [{"id", "op", "variant", "types", "dims"}].
Each op maps to the PyTorch call a user would write; times are CUDA-event medians over enough repetitions.
"""
import json, sys
import torch
import torch.nn.functional as F

DT = {"f32": torch.float32, "bf16": torch.bfloat16, "i32": torch.int32}

def dtypes(types):
    ins, _, out = types.partition(">")
    return [DT[t] for t in ins.split(",")], DT[out or ins.split(",")[0]]

def build(case):
    op, d = case["op"], case["dims"]
    ins, out = dtypes(case["types"])
    dev = "cuda"
    if op == "gemm":                      # dims: M, N, K; B layout in the variant ("...nk" or "...kn")
        m, n, k = d
        a = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        if case["variant"].endswith("kn"):
            b = torch.randn(k, n, device=dev, dtype=torch.bfloat16)
            return lambda: torch.matmul(a, b).to(out)
        b = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        return lambda: F.linear(a, b).to(out)
    if op == "gemv":                      # dims: m, N, K (decode: y = x·Wᵀ, W [N, K] bf16)
        m, n, k = d
        x = torch.randn(m, k, device=dev, dtype=ins[0]); w = torch.randn(n, k, device=dev, dtype=torch.bfloat16)
        return lambda: F.linear(x.to(torch.bfloat16), w).to(out)
    if op == "layernorm":                 # dims: rows, cols
        r, c = d
        x = torch.randn(r, c, device=dev, dtype=ins[0])
        w = torch.randn(c, device=dev, dtype=ins[-1]); b = torch.randn(c, device=dev, dtype=ins[-1])
        return lambda: F.layer_norm(x, (c,), w.to(x.dtype), b.to(x.dtype), 1e-5).to(out)
    if op == "bias_act":                  # dims: rows, n; GELU when the variant says so
        r, n = d
        x = torch.randn(r, n, device=dev, dtype=ins[0]); b = torch.randn(n, device=dev, dtype=ins[-1])
        gelu = case["variant"].startswith("gelu")
        nob = "nobias" in case["variant"]
        return lambda: (F.gelu(x if nob else x + b.to(x.dtype)) if gelu else x + b.to(x.dtype)).to(out)
    if op == "rmsnorm":                   # dims: rows, cols
        r, c = d
        x = torch.randn(r, c, device=dev, dtype=ins[0]); w = torch.randn(c, device=dev, dtype=ins[-1])
        return lambda: F.rms_norm(x.float(), (c,), w.float(), 1e-5).to(out)
    if op == "softmax":
        r, c = d
        x = torch.randn(r, c, device=dev, dtype=torch.float32)
        return lambda: torch.softmax(x, -1)
    if op == "silu_mul":                  # dims: T, I (fused gate/up rows)
        t, i = d
        gu = torch.randn(t, 2 * i, device=dev, dtype=ins[0])
        return lambda: F.silu(gu[:, :i]) * gu[:, i:]
    if op == "embedding":                 # dims: T, V, D
        t, v, dd = d
        table = torch.randn(v, dd, device=dev, dtype=ins[-1]); ids = torch.randint(0, v, (t,), device=dev)
        return lambda: F.embedding(ids, table).to(out)
    if op == "convert":                   # dims: n
        x = torch.randn(d[0], device=dev, dtype=ins[0])
        return lambda: x.to(out)
    return None

def time_ms(fn):
    for _ in range(3): fn()
    torch.cuda.synchronize()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record(); fn(); e.record(); torch.cuda.synchronize()
    reps = max(5, min(200, int(50.0 / max(s.elapsed_time(e), 1e-3))))
    times = []
    for _ in range(reps):
        s.record(); fn(); e.record(); torch.cuda.synchronize(); times.append(s.elapsed_time(e))
    times.sort()
    return times[len(times) // 2]

def main():
    cases = json.load(open(sys.argv[1]))
    res = {}
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
    for c in cases:
        fn = build(c)
        if fn is None: continue
        try:
            res[c["id"]] = time_ms(fn)
            print(f"  {c['id']:<60} {res[c['id']]*1000:10.1f} us")
        except Exception as ex:  # keep going: one bad case must not lose the others
            print(f"  {c['id']:<60} failed: {ex}")
        torch.cuda.empty_cache()
    json.dump({"torch": torch.__version__, "device": torch.cuda.get_device_name(), "ms": res}, open(sys.argv[2], "w"), indent=1)

if __name__ == "__main__":
    main()
