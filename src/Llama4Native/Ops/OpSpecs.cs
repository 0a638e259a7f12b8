namespace Llama4Native.Ops;

/// <summary>The one table of ops: tests, `llama4 selftest`, `llama4 bench-kernels` and the BenchmarkDotNet suite all read it.</summary>
internal static class OpSpecs
{
    public static IReadOnlyList<OpSpec> All { get; } =
    [
        new AddSpec(), new ConvertSpec(), new RmsNormSpec(), new AddRmsNormSpec(), new SiluMulSpec(), new SoftmaxSpec(), new EmbeddingSpec(),
        new GemmSpec(), new GemvSpec(), new RopeSpec(), new AttentionSpec(), new PagedAttentionSpec(), new MoeSpec(), new SampleSpec(),
        new LayerNormSpec(), new BiasActSpec(), new PatchUnfoldSpec(), new VisionEmbedSpec(), new VisionRopeSpec(), new PixelShuffleSpec(), new ScatterRowsSpec(),
        new QuantizeInt4Spec(), new GemmInt4Spec(), new MoeInt4Spec(),
        new QuantizeFp8Spec(), new GemmFp8Spec(), new MoeFp8Spec(),
        new StepSpec(), new FillSpec(),
    ];

    public static IEnumerable<OpCase> AllCases() => All.SelectMany(s => s.Cases());
    public static IEnumerable<OpCase> AllPerfCases() => All.SelectMany(s => s.PerfCases());
    public static OpSpec For(OpCase c) => All.FirstOrDefault(s => s.Name == c.Op) ?? throw new KeyNotFoundException($"no op named '{c.Op}'");

    /// <summary>Shell-style glob over case ids ("gemm/*", "*bf16*").</summary>
    public static bool Matches(OpCase c, string? filter) =>
        string.IsNullOrEmpty(filter) || System.IO.Enumeration.FileSystemName.MatchesSimpleExpression(filter, c.Id, ignoreCase: true);
}
