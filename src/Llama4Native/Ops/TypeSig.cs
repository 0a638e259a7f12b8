using Llama4Native.Tensors;

namespace Llama4Native.Ops;

/// <summary>Parses an op case's dtype signature: "f32", "bf16>f32", "f32,bf16>f32" (inputs &gt; output).</summary>
internal readonly record struct TypeSig(DType[] Inputs, DType Output)
{
    public static TypeSig Parse(string s)
    {
        var (ins, outs) = s.Contains('>') ? (s[..s.IndexOf('>')], s[(s.IndexOf('>') + 1)..]) : (s, s);
        var inputs = ins.Split(',').Select(One).ToArray();
        return new TypeSig(inputs, One(outs));
    }
    static DType One(string t) => t switch
    {
        "f32" => DType.F32, "bf16" => DType.BF16, "i32" => DType.I32,
        _ => throw new ArgumentException($"unknown dtype '{t}' in an op case"),
    };
    public DType In(int i) => Inputs[Math.Min(i, Inputs.Length - 1)];
}
