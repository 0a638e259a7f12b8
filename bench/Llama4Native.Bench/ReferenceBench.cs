using BenchmarkDotNet.Attributes;
using Llama4Native.Reference;

namespace Llama4Native.Bench;

/// <summary>
/// The C# reference ops, which every kernel test runs: their cost decides how large the test shapes can
/// be. Shapes: a decode-sized GEMM slice and one Scout hidden-state norm.
/// </summary>
[ShortRunJob]
public class ReferenceBench
{
    readonly float[] a = new float[16 * 1024], b = new float[1024 * 1024], c = new float[16 * 1024];
    readonly float[] x = new float[8 * 5120], w = new float[5120], y = new float[8 * 5120];

    [GlobalSetup]
    public void Setup()
    {
        var r = new Random(1);
        foreach (var arr in new[] { a, b, x, w }) for (int i = 0; i < arr.Length; i++) arr[i] = (float)r.NextDouble() - 0.5f;
    }

    [Benchmark] public void Gemm_16x1024x1024() => Gemm.Forward(a, b, c, 16, 1024, 1024, GemmBLayout.NK);
    [Benchmark] public void RmsNorm_8x5120() => RmsNorm.Forward(x, w, y, 8, 5120, 1e-5f);
}
