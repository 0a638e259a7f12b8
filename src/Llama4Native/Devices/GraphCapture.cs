namespace Llama4Native.Devices;

/// <summary>The operation list of a graph capture in progress, for the devices that keep captures themselves (the
/// emulator replays them, the recording device counts them): at most one capture at a time, ended by the device that
/// began it. CUDA keeps its own (Cu.Graph).</summary>
internal sealed class GraphCapture<T>
{
    List<T>? list;

    /// <summary>True while a capture is in progress: operations go to the list instead of running.</summary>
    public bool Active => list is not null;

    /// <summary>Adds a captured operation (only while <see cref="Active"/>).</summary>
    public void Add(T op) => (list ?? throw new InvalidOperationException("no capture is in progress")).Add(op);

    /// <summary>BeginCapture: throws when one is already in progress.</summary>
    public void Begin()
    {
        if (list is not null) throw new InvalidOperationException("a capture is already in progress on this device");
        list = [];
    }

    /// <summary>EndCapture: the captured operations in order; throws without a matching Begin.</summary>
    public T[] End()
    {
        var l = list ?? throw new InvalidOperationException("EndCapture without BeginCapture");
        list = null;
        return [.. l];
    }

    /// <summary>Throws when a capture is in progress: "<paramref name="what"/> inside a graph capture: <paramref name="rule"/>".</summary>
    public void Refuse(string what, string rule)
    {
        if (list is not null) throw new InvalidOperationException($"{what} inside a graph capture: {rule}");
    }
}
