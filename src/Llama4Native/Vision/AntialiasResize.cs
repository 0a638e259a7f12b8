using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Llama4Native.Vision;

/// <summary>
/// Bilinear resize with antialias of uint8 RGB, bit-identical to torchvision <c>resize(antialias=True)</c> on CPU,
/// on either of torch's code paths (<see cref="ResizeKernel"/>; aten/src/ATen/native/cpu/UpSampleKernel.cpp,
/// UpSampleKernelAVXAntialias.h). Both compute, per output index i: scale = in/out, support = max(scale, 1),
/// center = scale·(i + 0.5), xmin = max(trunc(center − support + 0.5), 0), xsize = min(trunc(center + support +
/// 0.5), in) − xmin, w_j = tri((xmin + j − center + 0.5) / max(scale, 1)) normalised by their sum; the horizontal
/// pass runs first and a pass whose size does not change is skipped. They differ in arithmetic:
/// <list type="bullet">
/// <item><see cref="ResizeKernel.TorchUint8"/>: weights in double, then int16 at a precision p per pass — the
///   largest p &lt; 22 with (int)(0.5 + w_max·2^(p+1)) &lt; 2^15, w16 = (int)(0.5 + w·2^p); out = clamp((2^(p−1) +
///   Σ w16·x) &gt;&gt; p, 0, 255) in int32; uint8 intermediate;</item>
/// <item><see cref="ResizeKernel.TorchFloat32"/>: weights in float32, float32 sums and intermediate, round half to
///   even at the end.</item>
/// </list>
/// Pixels are interleaved RGB (HWC); separable passes over precomputed taps, rows in parallel, no per-pixel allocation.
/// </summary>
internal static class AntialiasResize
{
    /// <summary>One pass's taps: for output i, input [Start[i], Start[i] + Count[i]) with int16 weights at K·i.</summary>
    internal sealed record Taps(int[] Start, int[] Count, short[] Weights, int K, int Precision);

    internal static Taps ComputeTaps(int inSize, int outSize)
    {
        double scale = (double)inSize / outSize;
        double support = scale >= 1.0 ? scale : 1.0;          // interp_size/2 = 1 for bilinear, widened by the scale when shrinking
        double invScale = scale >= 1.0 ? 1.0 / scale : 1.0;
        int k = (int)Math.Ceiling(support) * 2 + 1;
        var start = new int[outSize];
        var count = new int[outSize];
        var wd = new double[outSize * k];
        double wMax = 0;
        for (int i = 0; i < outSize; i++)
        {
            double center = scale * (i + 0.5);
            long xmin = Math.Max((long)(center - support + 0.5), 0L);
            long xsize = Math.Min((long)(center + support + 0.5), inSize) - xmin;
            xsize = Math.Clamp(xsize, 0, k);                   // torch clips the rare precision overshoot the same way
            double total = 0;
            for (int j = 0; j < xsize; j++)
            {
                double x = Math.Abs(((j + xmin) - center + 0.5) * invScale);
                double w = x < 1.0 ? 1.0 - x : 0.0;
                wd[i * k + j] = w;
                total += w;
            }
            if (total != 0.0)
                for (int j = 0; j < xsize; j++)
                {
                    wd[i * k + j] /= total;
                    wMax = Math.Max(wMax, wd[i * k + j]);
                }
            start[i] = (int)xmin;
            count[i] = (int)xsize;
        }
        int p;
        for (p = 0; p < 22; p++)
            if ((int)(0.5 + wMax * (1 << (p + 1))) >= 1 << 15) break;
        var w16 = new short[outSize * k];
        for (int n = 0; n < w16.Length; n++)
        {
            double v = wd[n] * (1 << p);
            w16[n] = (short)(v < 0 ? (int)(-0.5 + v) : (int)(0.5 + v));
        }
        return new Taps(start, count, w16, k, p);
    }

    /// <summary>
    /// Resizes interleaved RGB <paramref name="src"/> [srcH, srcW, 3] to [dstH, dstW, 3] with the chosen kernel.
    /// Returns the input array itself when the size does not change (torchvision returns the image unchanged too).
    /// </summary>
    public static byte[] Resize(byte[] src, int srcW, int srcH, int dstW, int dstH, ResizeKernel kernel = ResizeKernel.TorchFloat32)
    {
        const int C = 3;
        if (srcW <= 0 || srcH <= 0 || dstW <= 0 || dstH <= 0) throw new ArgumentOutOfRangeException(nameof(dstW), $"resize {srcW}x{srcH} -> {dstW}x{dstH}: sizes must be positive");
        if (src.LongLength != (long)srcW * srcH * C) throw new ArgumentException($"pixel buffer has {src.LongLength} bytes; {srcW}x{srcH} RGB needs {(long)srcW * srcH * C}", nameof(src));
        if (srcW == dstW && srcH == dstH) return src;
        return kernel switch
        {
            ResizeKernel.TorchUint8 => ResizeUint8(src, srcW, srcH, dstW, dstH),
            ResizeKernel.TorchFloat32 => ResizeFloat32(src, srcW, srcH, dstW, dstH),
            _ => throw new ArgumentOutOfRangeException(nameof(kernel), kernel, "unknown resize kernel"),
        };
    }

    static byte[] ResizeUint8(byte[] src, int srcW, int srcH, int dstW, int dstH)
    {
        const int C = 3;
        byte[] cur = src;
        if (dstW != srcW)
        {
            var t = ComputeTaps(srcW, dstW);
            var tmp = new byte[(long)srcH * dstW * C];
            Horizontal(cur, srcW, srcH, tmp, dstW, t);
            cur = tmp;
        }
        if (dstH != srcH)
        {
            var t = ComputeTaps(srcH, dstH);
            var dst = new byte[(long)dstH * dstW * C];
            Vertical(cur, dstW, dst, dstH, t);
            cur = dst;
        }
        return cur;
    }

    static void Horizontal(byte[] src, int srcW, int rows, byte[] dst, int dstW, Taps t)
    {
        int round = 1 << (t.Precision - 1), p = t.Precision;
        Parallel.For(0, rows, y =>
        {
            var s = src.AsSpan(y * srcW * 3, srcW * 3);
            var d = dst.AsSpan(y * dstW * 3, dstW * 3);
            for (int x = 0; x < dstW; x++)
            {
                int r = round, g = round, b = round;
                int o = t.Start[x] * 3, n = t.Count[x], wk = x * t.K;
                for (int j = 0; j < n; j++, o += 3)
                {
                    int w = t.Weights[wk + j];
                    r += w * s[o]; g += w * s[o + 1]; b += w * s[o + 2];
                }
                d[x * 3] = Clamp8(r >> p); d[x * 3 + 1] = Clamp8(g >> p); d[x * 3 + 2] = Clamp8(b >> p);
            }
        });
    }

    static void Vertical(byte[] src, int width, byte[] dst, int dstH, Taps t)
    {
        int round = 1 << (t.Precision - 1), p = t.Precision, rowLen = width * 3;
        Parallel.For(0, dstH, y =>
        {
            var acc = rowLen <= 4096 ? stackalloc int[rowLen] : new int[rowLen];
            acc.Fill(round);
            int n = t.Count[y], wk = y * t.K, y0 = t.Start[y];
            for (int j = 0; j < n; j++)
            {
                int w = t.Weights[wk + j];
                var s = src.AsSpan((y0 + j) * rowLen, rowLen);
                for (int i = 0; i < rowLen; i++) acc[i] += w * s[i];
            }
            var d = dst.AsSpan(y * rowLen, rowLen);
            for (int i = 0; i < rowLen; i++) d[i] = Clamp8(acc[i] >> p);
        });
    }

    static byte Clamp8(int v) => (byte)(v < 0 ? 0 : v > 255 ? 255 : v);

    /// <summary>float32 taps as torch computes them for a float tensor: the same formulas in float32, where C++
    /// mixes float and double exactly as written in <c>_compute_indices_min_size_weights_aa</c> (i + 0.5 and the
    /// + 0.5 terms are double; center, support, invscale, weights and their sum are float).</summary>
    internal sealed record FloatTaps(int[] Start, int[] Count, float[] Weights, int K);

    internal static FloatTaps ComputeFloatTaps(int inSize, int outSize)
    {
        float scale = (float)inSize / outSize;
        float support = scale >= 1.0 ? (float)(1.0 * scale) : 1.0f;
        float invScale = scale >= 1.0 ? (float)(1.0 / scale) : 1.0f;
        int k = (int)Math.Ceiling(support) * 2 + 1;
        var start = new int[outSize];
        var count = new int[outSize];
        var wf = new float[outSize * k];
        for (int i = 0; i < outSize; i++)
        {
            float center = (float)(scale * (i + 0.5));
            long xmin = Math.Max((long)((double)(center - support) + 0.5), 0L);
            long xsize = Math.Min((long)((double)(center + support) + 0.5), inSize) - xmin;
            xsize = Math.Clamp(xsize, 0, k);
            float total = 0;
            for (int j = 0; j < xsize; j++)
            {
                float x = Math.Abs((float)(((double)((float)(j + xmin) - center) + 0.5) * invScale));
                float w = x < 1.0 ? (float)(1.0 - x) : 0f;
                wf[i * k + j] = w;
                total += w;
            }
            if (total != 0)
                for (int j = 0; j < xsize; j++) wf[i * k + j] /= total;
            start[i] = (int)xmin;
            count[i] = (int)xsize;
        }
        return new FloatTaps(start, count, wf, k);
    }

    /// <summary>
    /// torchvision's path when it does not hand uint8 to torch (see <see cref="ResizeKernel.TorchFloat32"/>):
    /// uint8 → float32, the generic separable AA kernel (horizontal then vertical, float32 intermediate, each output
    /// Σ_j x_j·w_j accumulated in tap order from x_0·w_0), then <c>round_()</c> (half to even) → uint8.
    /// <para>Which products are fused with their add is not in the source but in how the CPU kernel was compiled
    /// (FMA enabled, GCC contraction): see <see cref="Accumulate"/>.</para>
    /// </summary>
    /// <summary>
    /// Σ_j x_j·w_j over n taps as torch's compiled loop does it: x_0·w_0, then taps 1..n−1 in order, the first
    /// ⌊(n−1)/4⌋·4 of them as a separately rounded product and add, the rest fused (one rounding). Our reading of the
    /// binary's behaviour: GCC unrolls the tap loop by 4, computes those four products as one vector multiply and
    /// adds them in order, and contracts the leftover scalar iterations into FMAs. Fitted to the HF fixture, where it
    /// is bit-exact for all three images (taps 1–6, both passes); all-fused is off by one level in 551 values of the
    /// tall image's global tile, all-separate in 221 of the wide one's, leftovers-first in 14. "Fused iff n ≤ 4"
    /// also fits; the two differ only for rows of 6+ taps, which the fixture has few of.
    /// </summary>
    static float Accumulate(ReadOnlySpan<float> s, int o, int stride, ReadOnlySpan<float> w, int n)
    {
        float acc = s[o] * w[0];
        int separate = 1 + (n - 1) / 4 * 4;
        int j = 1;
        for (; j < separate; j++) acc += s[o + j * stride] * w[j];   // .NET never contracts a*b+c into an FMA
        for (; j < n; j++) acc = MathF.FusedMultiplyAdd(s[o + j * stride], w[j], acc);
        return acc;
    }

    /// <summary>d[i] += s[i]·w, rounded after the product and after the add, or once (<paramref name="fused"/>).</summary>
    static void MulAddRow(ReadOnlySpan<float> s, float w, Span<float> d, bool fused)
    {
        int i = 0;
        if (Vector256.IsHardwareAccelerated && (!fused || Fma.IsSupported))
        {
            var wv = Vector256.Create(w);
            for (; i + 8 <= d.Length; i += 8)
            {
                var sv = Vector256.Create(s.Slice(i, 8));
                var dv = Vector256.Create(d.Slice(i, 8));
                (fused ? Fma.MultiplyAdd(sv, wv, dv) : dv + sv * wv).CopyTo(d.Slice(i, 8));
            }
        }
        for (; i < d.Length; i++) d[i] = fused ? MathF.FusedMultiplyAdd(s[i], w, d[i]) : d[i] + s[i] * w;
    }

    static byte[] ResizeFloat32(byte[] src, int srcW, int srcH, int dstW, int dstH)
    {
        const int C = 3;
        var cur = new float[src.LongLength];
        for (long i = 0; i < src.LongLength; i++) cur[i] = src[i];
        if (dstW != srcW)
        {
            var t = ComputeFloatTaps(srcW, dstW);
            var tmp = new float[(long)srcH * dstW * C];
            var inp = cur;
            Parallel.For(0, srcH, y =>
            {
                var s = inp.AsSpan(y * srcW * C, srcW * C);
                var d = tmp.AsSpan(y * dstW * C, dstW * C);
                for (int x = 0; x < dstW; x++)
                {
                    int o = t.Start[x] * C, n = t.Count[x];
                    var w = t.Weights.AsSpan(x * t.K, t.K);
                    d[x * C] = Accumulate(s, o, C, w, n);
                    d[x * C + 1] = Accumulate(s, o + 1, C, w, n);
                    d[x * C + 2] = Accumulate(s, o + 2, C, w, n);
                }
            });
            cur = tmp;
        }
        if (dstH != srcH)
        {
            var t = ComputeFloatTaps(srcH, dstH);
            int row = dstW * C;
            var tmp = new float[(long)dstH * row];
            var inp = cur;
            Parallel.For(0, dstH, y =>
            {
                var d = tmp.AsSpan(y * row, row);
                int y0 = t.Start[y], n = t.Count[y], wk = y * t.K;
                // Row at a time, each element's operations in tap order: the same arithmetic as Accumulate, vectorised.
                var s0 = inp.AsSpan(y0 * row, row);
                float w0 = t.Weights[wk];
                for (int i = 0; i < row; i++) d[i] = s0[i] * w0;
                int separate = 1 + (n - 1) / 4 * 4;
                for (int j = 1; j < n; j++)
                    MulAddRow(inp.AsSpan((y0 + j) * row, row), t.Weights[wk + j], d, fused: j >= separate);
            });
            cur = tmp;
        }
        var dst = new byte[cur.LongLength];
        for (long i = 0; i < cur.LongLength; i++) dst[i] = (byte)Math.Clamp(MathF.Round(cur[i], MidpointRounding.ToEven), 0f, 255f);
        return dst;
    }
}

/// <summary>
/// Which of torch's two CPU code paths <c>torchvision.transforms.v2.functional.resize</c> takes for a uint8 image
/// (bilinear, antialias). torchvision hands uint8 to torch natively only when <c>_do_native_uint8_resize_on_cpu</c>
/// says so: <c>"AVX2" in get_cpu_capability()</c> in older releases (so NOT on AVX-512 machines), "AVX2" or
/// "AVX512" in newer ones; otherwise it converts to float32 and rounds back. The fixture was made on the float32 path.
/// </summary>
internal enum ResizeKernel
{
    /// <summary>uint8 → float32 → interpolate → round half to even → uint8. Matches the HF fixture bit for bit.</summary>
    TorchFloat32,
    /// <summary>torch's native uint8 path: int16 fixed-point weights (Pillow-SIMD scheme), horizontal pass first.</summary>
    TorchUint8,
}
