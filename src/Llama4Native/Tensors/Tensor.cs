using System.Runtime.CompilerServices;
using Llama4Native.Devices;

namespace Llama4Native.Tensors;

/// <summary>A shape of rank 0..4, stored inline so tensors are values (no allocation per token).</summary>
public readonly struct Shape : IEquatable<Shape>
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
/// </summary>
public readonly record struct Tensor(DevicePtr Ptr, DType DType, Shape Shape)
{
    public long Elements => Shape.Elements;
    public long Bytes => Shape.Elements * DType.Size();
    public Tensor Reshape(params ReadOnlySpan<long> dims)
    {
        var s = new Shape(dims);
        if (s.Elements != Elements) throw new ArgumentException($"cannot reshape {Shape} ({Elements} elements) to {s}");
        return this with { Shape = s };
    }
    /// <summary>Rows [start, start+count) of the leading dimension.</summary>
    public Tensor Slice(long start, long count)
    {
        if (Shape.Rank == 0 || start < 0 || count < 0 || start + count > Shape[0])
            throw new ArgumentOutOfRangeException(nameof(start), $"rows [{start}, {start + count}) outside {Shape}");
        long rowBytes = Bytes / Math.Max(1, Shape[0]);
        Span<long> d = stackalloc long[Shape.Rank];
        for (int i = 0; i < d.Length; i++) d[i] = Shape[i];
        d[0] = count;
        return new Tensor(Ptr + start * rowBytes, DType, new Shape(d));
    }
    public override string ToString() => $"{DType}{Shape} @ {Ptr}";
}
