using Llama4Native.Checkpoints;
using Llama4Native.Devices;
using Llama4Native.Distributed;
using Llama4Native.Interop;
using Llama4Native.Model;
using Llama4Native.Tensors;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Distributed;

/// <summary>
/// The device-group path on a real GPU (ignored, saying why, without one; bench/gpu-check.sh run lists their outcome):
/// one rank joined through the TCP rendezvous — rank 0 makes NCCL's unique id, the rendezvous hands it out,
/// ncclCommInitRank — doing an all-reduce; and the model on cuda:0 loaded and run through DeviceGroup/ShardedWeights/
/// ShardedTextGraph, giving the greedy tokens of one emulated device.
/// </summary>
[Category("Cuda")]
public class CudaGroupTests
{
    [Test]
    public void NcclRankJoinsThroughTheRendezvousAndAllReduces()
    {
        TestDevices.CudaOrIgnore().Dispose();
        if (!NcclLocator.TryLoad(out var reason)) Assert.Ignore($"a GPU but no NCCL: {reason}");
        using var group = DeviceGroup.Join("cuda:0", 0, 1, $"tcp://127.0.0.1:{CollectiveTests.FreePort()}", TimeSpan.FromSeconds(30), "cuda test");
        var comm = group.Comms.Ranks[0];
        Assert.That((comm.Backend, comm.Rank, comm.Size, group.World), Is.EqualTo(("nccl", 0, 1, 1)));
        var dev = group.Devices[0];
        var x = Ops.DeviceData.Normal(new Random(TestSeed.For("nccl rendezvous")), 777);
        using var a = Ops.DeviceData.Upload(dev, x, DType.F32);
        using var b = Ops.DeviceData.Poisoned(dev, 777, DType.F32);
        comm.AllReduceSum(new Tensor(a.Ptr, DType.F32, new Shape(777)), new Tensor(b.Ptr, DType.F32, new Shape(777)));
        dev.Synchronize();
        Assert.That(Ops.DeviceData.Download(dev, b.Ptr, 777, DType.F32), Is.EqualTo(x), "a 1-rank all-reduce is the identity");
    }

    [Test]
    public void TheModelOnCuda0ThroughTheDeviceGroupPathGivesOneEmulatedDevicesTokens()
    {
        TestDevices.CudaOrIgnore().Dispose();
        using var ckpt = Checkpoint.Open(CkptTestUtil.FixtureModel("tiny-scout"));
        using var f = SafetensorsFile.Open(Path.Combine(CkptTestUtil.Fixture("tiny-scout"), "golden_text.safetensors"));
        var ids = f.Span<long>(f.Get("input_ids")).ToArray().Select(v => (int)v).ToArray();
        int[] Greedy(string spec)
        {
            using var group = DeviceGroup.Create(spec);
            using var w = ShardedWeights.Load(ckpt, group);
            return ShardedTextGraph.Greedy(w, ids, 6, ComputeMode.F32).Ids;
        }
        var cuda = Greedy("cuda:0");
        var emu = Greedy("emu");
        TestContext.Out.WriteLine($"cuda:0 through the device group: {string.Join(",", cuda)}; emu: {string.Join(",", emu)}");
        Assert.That(cuda, Is.EqualTo(emu));
    }
}
