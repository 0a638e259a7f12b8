using Llama4Native.Devices;
using Llama4Native.Ops;
using Llama4Native.Tensors;
using K = Llama4Native.Kernels.Attention;

namespace Llama4Native.Tests.Kernels;

/// <summary>
/// Properties of the attention masks the op table can't state: with chunked attention (a RoPE layer) a change to
/// a key/value in an earlier chunk leaves every later chunk's outputs bit-for-bit unchanged, while the causal
/// mask (a NoPE layer) lets it through; and no query ever sees a later key. Prefill of 3 chunks (T = 24, C = 8),
/// GQA 2, every kernel variant, on the emulated device.
/// </summary>
[TestFixture, Category("Emulator")]
internal sealed class AttentionMaskTests
{
    const int T = 24, C = 8, H = 4, Hkv = 2, D = 16;
    Device? dev;

    [OneTimeSetUp] public void Open() => dev = TestDevices.Emulated();
    [OneTimeTearDown] public void Close() => dev?.Dispose();

    public static IEnumerable<TestCaseData> Variants()
    {
        yield return new TestCaseData(K.Variant.Fwd, DType.F32).SetName("Fwd_f32");
        yield return new TestCaseData(K.Variant.Fwd, DType.BF16).SetName("Fwd_bf16");
        yield return new TestCaseData(K.Variant.Mma, DType.BF16).SetName("Mma_bf16");
        yield return new TestCaseData(K.Variant.SplitKv, DType.F32).SetName("SplitKv_f32");
        yield return new TestCaseData(K.Variant.SplitKv, DType.BF16).SetName("SplitKv_bf16");
    }

    /// <summary>O [T, H, D] of one prefill: K, V laid out [Hkv, T, D], positions 0..T-1.</summary>
    float[] Run(float[] q, float[] k, float[] v, int chunk, K.Variant variant, DType dt)
    {
        var d = dev!;
        var bufs = new List<DeviceBuffer>();
        DeviceBuffer Keep(DeviceBuffer b) { bufs.Add(b); return b; }
        try
        {
            var tq = new Tensor(Keep(DeviceData.Upload(d, q, dt)).Ptr, dt, new Shape(T, H, D));
            var tk = new Tensor(Keep(DeviceData.Upload(d, k, dt)).Ptr, dt, new Shape(Hkv, T, D));
            var tv = new Tensor(Keep(DeviceData.Upload(d, v, dt)).Ptr, dt, new Shape(Hkv, T, D));
            var to = new Tensor(Keep(DeviceData.Poisoned(d, (long)T * H * D, dt)).Ptr, dt, new Shape(T, H, D));
            var batch = new K.Batch(Keep(DeviceData.Upload<int>(d, [0, T])).Ptr, Keep(DeviceData.Upload<int>(d, [T])).Ptr,
                                    Keep(DeviceData.Upload<int>(d, [0])).Ptr, Keep(DeviceData.Upload<int>(d, [0])).Ptr,
                                    Keep(DeviceData.Upload<long>(d, [0L])).Ptr, 1, T, T);
            const int keysPerSplit = 8;
            long ws = K.WorkspaceBytes(T, H, D, T, keysPerSplit);
            var wsb = Keep(d.Allocate(ws));
            K.Run(d, tq, tk, tv, to, batch, new K.KvLayout(Hkv, D, T * D), chunk, variant: variant,
                  workspace: wsb.Ptr, workspaceBytes: ws, keysPerSplit: keysPerSplit);
            return DeviceData.Download(d, to.Ptr, to.Elements, dt);
        }
        finally { foreach (var b in bufs) b.Dispose(); }
    }

    static (float[] q, float[] k, float[] v) Inputs(int seed, DType dt)
    {
        var rng = new Random(seed);
        return (DeviceData.Normal(rng, (long)T * H * D, 1f, dt), DeviceData.Normal(rng, (long)Hkv * T * D, 1f, dt),
                DeviceData.Normal(rng, (long)Hkv * T * D, 1f, dt));
    }

    /// <summary>K and V with key slot <paramref name="slot"/> replaced (every kv head, every dim).</summary>
    static (float[] k, float[] v) Changed(float[] k, float[] v, int slot, int seed, DType dt)
    {
        float[] k2 = (float[])k.Clone(), v2 = (float[])v.Clone();
        var fresh = DeviceData.Normal(new Random(seed ^ 0x5eed), 2L * Hkv * D, 2f, dt);
        for (int g = 0; g < Hkv; g++)
            for (int i = 0; i < D; i++)
            {
                k2[(g * T + slot) * D + i] = fresh[g * D + i];
                v2[(g * T + slot) * D + i] = fresh[(Hkv + g) * D + i];
            }
        return (k2, v2);
    }

    static bool RowSame(float[] a, float[] b, int row)
    {
        for (int i = row * H * D; i < (row + 1) * H * D; i++)
            if (BitConverter.SingleToUInt32Bits(a[i]) != BitConverter.SingleToUInt32Bits(b[i])) return false;
        return true;
    }

    static bool RowChanged(float[] a, float[] b, int row) => !RowSame(a, b, row);

    [TestCaseSource(nameof(Variants))]
    public void EarlierChunkIsInvisibleToLaterChunks_ButNotUnderTheCausalMask(K.Variant variant, DType dt)
    {
        int seed = TestSeed.For(nameof(EarlierChunkIsInvisibleToLaterChunks_ButNotUnderTheCausalMask) + variant + dt);
        var (q, k, v) = Inputs(seed, dt);
        const int slot = 3; // in chunk 0 = positions 0..7
        var (k2, v2) = Changed(k, v, slot, seed, dt);

        float[] a = Run(q, k, v, C, variant, dt), b = Run(q, k2, v2, C, variant, dt);
        for (int r = 0; r < T; r++)
        {
            if (r < slot || r >= C) Assert.That(RowSame(a, b, r), $"chunk {C}: query {r} changed when key {slot} changed (seed {seed})");
            else Assert.That(RowChanged(a, b, r), $"chunk {C}: query {r} ignores key {slot} of its own chunk (seed {seed})");
        }

        float[] ca = Run(q, k, v, 0, variant, dt), cb = Run(q, k2, v2, 0, variant, dt);
        for (int r = 0; r < T; r++)
        {
            if (r < slot) Assert.That(RowSame(ca, cb, r), $"causal: query {r} changed when the later key {slot} changed (seed {seed})");
            else Assert.That(RowChanged(ca, cb, r), $"causal: query {r} ignores the earlier key {slot} (seed {seed})");
        }
    }

    [TestCaseSource(nameof(Variants))]
    public void NoQuerySeesALaterKey(K.Variant variant, DType dt)
    {
        int seed = TestSeed.For(nameof(NoQuerySeesALaterKey) + variant + dt);
        var (q, k, v) = Inputs(seed, dt);
        foreach (int slot in new[] { 20, 17, 9 })
        {
            var (k2, v2) = Changed(k, v, slot, seed + slot, dt);
            foreach (int chunk in new[] { 0, C })
            {
                float[] a = Run(q, k, v, chunk, variant, dt), b = Run(q, k2, v2, chunk, variant, dt);
                for (int r = 0; r < slot; r++)
                    Assert.That(RowSame(a, b, r), $"chunk {chunk}: query {r} saw the later key {slot} (seed {seed})");
                Assert.That(RowChanged(a, b, slot), $"chunk {chunk}: query {slot} ignores its own key (seed {seed})");
            }
        }
    }
}
