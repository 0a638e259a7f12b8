using Llama4Native.Devices.Emulated;

namespace Llama4Native.Devices;

/// <summary>Picks a device from a spec: "auto" (the first GPU, else the emulator), "cuda", "cuda:N", or "emu".</summary>
internal static class DeviceFactory
{
    public static Device Create(string spec = "auto")
    {
        switch (spec)
        {
            case "emu": return new EmuDevice();
            case "auto": return TryCreateCuda(0, out var d, out _) ? d! : new EmuDevice();
            case "cuda": return CreateCuda(0);
        }
        if (spec.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(spec[5..], out var n) && n >= 0) return CreateCuda(n);
        throw new ArgumentException($"unknown device '{spec}': use auto, cuda, cuda:N or emu");
    }

    static Device CreateCuda(int ordinal) =>
        TryCreateCuda(ordinal, out var d, out var reason) ? d! : throw new InvalidOperationException($"CUDA device {ordinal} is not available: {reason}");

    public static bool TryCreateCuda(int ordinal, out Device? device, out string reason)
    {
        device = null;
        if (!Interop.CudaDriver.TryLoad(out reason)) return false;
        int count = Interop.CudaDriver.DeviceCount;
        if (ordinal >= count) { reason = $"CUDA device {ordinal} requested but the driver reports {count}"; return false; }
        try { device = new Cuda.CudaDevice(ordinal); return true; }
        catch (Interop.CudaException e) { reason = e.Message; return false; }
    }
}
