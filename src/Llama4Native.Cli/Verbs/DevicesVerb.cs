using Llama4Native.Devices.Emulated;
using Llama4Native.Interop;

namespace Llama4Native.Cli.Verbs;

/// <summary>`llama4 devices`: the CUDA devices (name, memory, compute capability, driver) — or why there are none —
/// and the emulated device, which is always there.</summary>
internal static class DevicesVerb
{
    public static readonly VerbSpec Spec = new("devices", "list the CUDA devices (name, memory, compute capability, driver) or why there are none, and the emulator", []);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        _ = new Args(argv, Spec);
        if (!CudaDriver.TryLoad(out var reason))
            stdout.WriteLine($"cuda: none — {reason}");
        else
        {
            try
            {
                var (major, minor) = CudaDriver.Version;
                int n = CudaDriver.DeviceCount;
                stdout.WriteLine($"cuda: driver supports CUDA {major}.{minor}; {n} device{(n == 1 ? "" : "s")}");
                for (int i = 0; i < n; i++)
                {
                    var d = CudaDriver.GetDeviceInfo(i);
                    string free = "";
                    try
                    {
                        using var dev = new Devices.Cuda.CudaDevice(i);
                        free = $", {Format.Bytes(dev.FreeMemory)} free";
                    }
                    catch (Exception e) when (e is CudaException or InvalidOperationException) { free = $" (cannot open: {e.Message})"; }
                    stdout.WriteLine($"  cuda:{i}  {d.Name}  {Format.Bytes(d.TotalMemoryBytes)}{free}  compute capability {d.ComputeCapabilityMajor}.{d.ComputeCapabilityMinor} ({d.SmArch})  " +
                                     $"{d.MultiprocessorCount} SMs" + (d.ComputeCapabilityMajor < 8 ? "  — too old: Llama4Native needs sm_80 or newer" : ""));
                }
            }
            catch (CudaException e) { stdout.WriteLine($"cuda: driver loaded but unusable — {e.Message}"); }
        }
        using var emu = new EmuDevice();
        stdout.WriteLine($"emu: {emu.Name}, {Format.Bytes(emu.TotalMemory)} (runs every kernel on the CPU; slow, for tests and the demo)");
        return 0;
    }
}
