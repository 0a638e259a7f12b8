using Llama4Native.Devices;
using Llama4Native.Tensors;

namespace Llama4Native.Tests.Core;

public class ShapeTests
{
    [Test]
    public void ShapeCountsAndSlices()
    {
        var rng = new Random(TestContext.CurrentContext.Random.Next());
        long a = rng.Next(1, 50), b = rng.Next(1, 50), c = rng.Next(1, 9);
        var t = new Tensor(new DevicePtr(0x1000), DType.BF16, new Shape(a, b, c));
        Assert.That(t.Elements, Is.EqualTo(a * b * c));
        Assert.That(t.Bytes, Is.EqualTo(a * b * c * 2));
        Assert.That(t.Shape.Rows, Is.EqualTo(a * b));
        var s = t.Slice(a - 1, 1);
        Assert.That(s.Ptr.Value, Is.EqualTo(0x1000 + (ulong)((a - 1) * b * c * 2)));
        Assert.That(s.Shape, Is.EqualTo(new Shape(1, b, c)));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Slice(a, 1));
        Assert.Throws<ArgumentException>(() => t.Reshape(a * b * c + 1));
    }
}
