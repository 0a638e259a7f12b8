using NUnit.Framework;
using Llama4Native.Interop;

namespace Llama4Native.Tests.Interop;

[TestFixture]
public class PtxasInfoTests
{
    // Verbatim from NVRTC 12.4, -arch=sm_90a --ptxas-options=-v -maxrregcount=16.
    private const string Log = """
        ptxas warning : For profile sm_90a adjusting per thread register count of 16 to lower bound of 24
        ptxas info    : Overriding maximum register limit 256 for 'spill' with  24 of maxrregcount option
        ptxas info    : 0 bytes gmem
        ptxas info    : Compiling entry function 'usec' for 'sm_90a'
        ptxas info    : Function properties for usec
        ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info    : Used 10 registers
        ptxas info    : Compiling entry function 'spill' for 'sm_90a'
        ptxas info    : Function properties for spill
        ptxas         .     1056 bytes stack frame, 20 bytes spill stores, 20 bytes spill loads
        ptxas info    : Used 24 registers, 1056 bytes cumulative stack size, 256 bytes smem
        """;

    [Test]
    public void Parses_each_entry_function()
    {
        var k = PtxasInfo.Parse(Log);
        Assert.That(k, Has.Count.EqualTo(2));
        Assert.That(k[0], Is.EqualTo(new PtxasKernelInfo("usec", "sm_90a", 10, 0, 0, 0, 0, 0, 0, 0)));
        Assert.That(k[1], Is.EqualTo(new PtxasKernelInfo("spill", "sm_90a", 24, 20, 20, 1056, 256, 0, 1056, 0)));
        Assert.That(k[1].Spills, Is.True);
    }

    [Test]
    public void Sums_constant_banks_reads_barriers_and_skips_device_function_blocks()
    {
        const string log = """
            ptxas info    : Compiling entry function '_Z4gemmPfS_' for 'sm_80'
            ptxas info    : Function properties for _Z4gemmPfS_
            ptxas         .     8 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
            ptxas info    : Function properties for _Z6helperf
            ptxas         .     64 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
            ptxas info    : Used 128 registers, used 1 barriers, 8 bytes cumulative stack size, 49152 bytes smem, 368 bytes cmem[0], 16 bytes cmem[3]
            """;
        var k = PtxasInfo.Parse(log).Single();
        Assert.That(k, Is.EqualTo(new PtxasKernelInfo("_Z4gemmPfS_", "sm_80", 128, 0, 0, 8, 49152, 384, 8, 1)));
    }

    [Test]
    public void Empty_or_unrelated_logs_give_nothing()
    {
        Assert.That(PtxasInfo.Parse(""), Is.Empty);
        Assert.That(PtxasInfo.Parse("k.cu(3): warning: unused variable"), Is.Empty);
    }
}
