using System.Runtime.CompilerServices;
using Llama4Native.Devices;

namespace Llama4Native.Tensors;

/// <summary>A shape of rank 0..4, stored inline so tensors are values (no allocation per token).</summary>
internal readonly struct Shape : IEquatable<Shape>
{
    public const int MaxRank = 4;
    [InlineArray(MaxRank)] struct Dims { long _0; }
    readonly Dims dims;
    public int Rank { get; }

    public Shape(params ReadOnlySpan<long> d)
    {
        if (d.Length > MaxRank) throw new ArgumentException($"rank {d.Length} exceeds the maximum {MaxRank}");
        Rank = d.Length;
        for (int i = 0; i < d.Length; i++)
        {
            if (d[i] < 0) throw new ArgumentException($"dimension {i} is negative ({d[i]})");
            dims[i] = d[i];
        }
    }

    public long this[int i] => (uint)i < (uint)Rank ? dims[i] : throw new IndexOutOfRangeException($"dim {i} of rank-{Rank} shape");
    public long Elements { get { long n = 1; for (int i = 0; i < Rank; i++) n = checked(n * dims[i]); return n; } }
    /// <summary>The last dimension (the contiguous one); 1 for a scalar.</summary>
    public long Inner => Rank == 0 ? 1 : dims[Rank - 1];
    /// <summary>All dimensions but the last, multiplied: the row count of a row-major matrix view.</summary>
    public long Rows => Rank == 0 ? 1 : Elements / Math.Max(1, Inner);

    public bool Equals(Shape o)
    {
        if (Rank != o.Rank) return false;
        for (int i = 0; i < Rank; i++) if (dims[i] != o.dims[i]) return false;
        return true;
    }
    public override bool Equals(object? obj) => obj is Shape s && Equals(s);
    public override int GetHashCode() { var h = new HashCode(); for (int i = 0; i < Rank; i++) h.Add(dims[i]); return h.ToHashCode(); }
    public static bool operator ==(Shape a, Shape b) => a.Equals(b);
    public static bool operator !=(Shape a, Shape b) => !a.Equals(b);
    public override string ToString()
    {
        var parts = new string[Rank];
        for (int i = 0; i < Rank; i++) parts[i] = dims[i].ToString();
        return "[" + string.Join(", ", parts) + "]";
    }
}

/// <summary>
/// A view of device memory: pointer, element type and row-major contiguous shape. A value type; it owns
/// nothing (the arena or buffer it points into does).
/// <para>
/// Quantized weights (<see cref="DTypeInfo.IsQuantized"/>) are a property of the tensor: the shape is the LOGICAL
/// element shape, always output-major <c>[..., N, K]</c> (nn.Linear's [out, in]; routed experts [E, N, K]), and
/// <see cref="Scale"/> points at f32 scales, dequantized weight = q · scale:
/// <list type="bullet">
/// <item><see cref="DType.F8E4M3"/> (FBGEMM row-wise): one scale per output row, <c>[..., N]</c>; <see cref="Group"/> = K.</item>
/// <item><see cref="DType.I4"/> (Meta int4_mixed): one scale per group of <see cref="Group"/> consecutive input
/// elements of a row, <c>[..., N, K/Group]</c>; data packed two per byte (even k in the low nibble), <c>[..., N, K/2]</c> bytes.</item>
/// </list>
/// Kernel wrappers dispatch on <see cref="DType"/>; the graph passes weights the same way whatever their format.
/// </para>
/// </summary>
internal readonly record struct Tensor(DevicePtr Ptr, DType DType, Shape Shape)
{
    /// <summary>f32 scales of a quantized tensor (null for float tensors); layout in the type's summary.</summary>
    public DevicePtr Scale { get; init; }
    /// <summary>Input elements per scale of a quantized tensor (FP8 row-wise: K; int4: the group size G); 0 for float tensors.</summary>
    public int Group { get; init; }

    /// <summary>A quantized tensor: <paramref name="data"/> in <paramref name="dtype"/> with its scales.</summary>
    public static Tensor Quantized(DevicePtr data, DType dtype, Shape shape, DevicePtr scale, int group)
    {
        if (!dtype.IsQuantized()) throw new ArgumentException($"{dtype} is not a quantized weight format");
        if (shape.Rank < 2) throw new ArgumentException($"a quantized weight is [..., N, K]; got {shape}");
        if (group <= 0 || shape.Inner % group != 0)
            throw new ArgumentException($"a quantized weight {shape} needs a group size dividing K = {shape.Inner}; got {group}");
        if (dtype == DType.F8E4M3 && group != shape.Inner)
            throw new ArgumentException($"FP8 weights are scaled per output row: group must be K = {shape.Inner}, got {group}");
        if (dtype == DType.I4 && shape.Inner % 2 != 0) throw new ArgumentException($"I4 packs pairs along K; K = {shape.Inner} is odd");
        return new Tensor(data, dtype, shape) { Scale = scale, Group = group };
    }

    public long Elements => Shape.Elements;
    public long Bytes => DType.BytesOf(Shape.Elements);
    /// <summary>Number of f32 scales (0 for a float tensor).</summary>
    public long ScaleElements => Group == 0 ? 0 : Shape.Elements / Group;
    public long ScaleBytes => ScaleElements * 4;
    /// <summary>The scales as an f32 tensor [..., N, K/Group] (FP8: [..., N, 1]).</summary>
    public Tensor Scales
    {
        get
        {
            if (Group == 0) throw new InvalidOperationException($"{this} is not quantized: it has no scales");
            Span<long> d = stackalloc long[Shape.Rank];
            for (int i = 0; i < d.Length; i++) d[i] = Shape[i];
            d[^1] = Shape.Inner / Group;
            return new Tensor(Scale, DType.F32, new Shape(d));
        }
    }

    public Tensor Reshape(params ReadOnlySpan<long> dims)
    {
        var s = new Shape(dims);
        if (s.Elements != Elements) throw new ArgumentException($"cannot reshape {Shape} ({Elements} elements) to {s}");
        if (Group != 0 && s.Inner != Shape.Inner) throw new ArgumentException($"a quantized tensor keeps its K: cannot reshape {Shape} to {s}");
        return this with { Shape = s };
    }
    /// <summary>Rows [start, start+count) of the leading dimension (a quantized tensor's scales are sliced with it).</summary>
    public Tensor Slice(long start, long count)
    {
        if (Shape.Rank == 0 || start < 0 || count < 0 || start + count > Shape[0])
            throw new ArgumentOutOfRangeException(nameof(start), $"rows [{start}, {start + count}) outside {Shape}");
        long lead = Math.Max(1, Shape[0]);
        long rowBytes = Bytes / lead;
        Span<long> d = stackalloc long[Shape.Rank];
        for (int i = 0; i < d.Length; i++) d[i] = Shape[i];
        d[0] = count;
        var scale = Group == 0 ? Scale : Scale + start * (ScaleBytes / lead);
        if (DType == DType.I4 && Shape.Rank == 1 && start % 2 != 0)
            throw new ArgumentOutOfRangeException(nameof(start), $"an I4 vector slice must start on a byte (even element), got {start}");
        return new Tensor(Ptr + start * rowBytes, DType, new Shape(d)) { Scale = scale, Group = Group };
    }
    public override string ToString() => Group == 0 ? $"{DType}{Shape} @ {Ptr}" : $"{DType}{Shape} (scales f32, group {Group}) @ {Ptr}";
}
