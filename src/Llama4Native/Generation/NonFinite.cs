using Llama4Native.Checkpoints;
using Llama4Native.Model;
using Llama4Native.Tensors;

namespace Llama4Native.Generation;

/// <summary>
/// A forward produced NaN or infinity (NaN weights, NaN pixel values, an overflow): generation stops with this
/// instead of sampling from garbage. <see cref="Node"/> is the first graph node whose output was not finite (in
/// execution order: vision nodes first when the prompt had images), or null when it could not be pinned.
/// </summary>
public sealed class NonFiniteException : Exception
{
    internal NonFiniteException(string message, string? node) : base(message) { Node = node; }
    /// <summary>The first graph node whose output held NaN or infinity, e.g. "layers.0.attn.q_proj"; null if not found.</summary>
    public string? Node { get; }
}

/// <summary>
/// Finding where non-finite values came from, only once the cheap check on the logits (one dot product with a ones
/// vector, done with each sampling step on the device) has failed: the forward is run again on a fresh graph with
/// every node's output brought to the host in order, and the first non-finite one is named.
/// </summary>
internal static class NonFinite
{
    /// <summary>Tokens beyond which the diagnosis is skipped (it re-runs the whole history without the cache).</summary>
    const int MaxDiagnosisTokens = 8192;

    public static NonFiniteException Diagnose(ModelWeights weights, ComputeMode mode, IReadOnlyList<int> history, ImageTiles? images)
    {
        string? node = null;
        try { node = FirstBadNode(weights, mode, history, images); }
        catch (Exception e) when (e is not OutOfMemoryException and not NonFiniteException) { }   // the diagnosis is best effort
        string where = node is null ? "the node could not be pinned" : $"first at node '{node}'";
        string hint = node is null ? "" : node.StartsWith("v.", StringComparison.Ordinal) || node == "mm.proj"
            ? (node == "v.patch_unfold" ? " — the image's pixel values are not finite" : " — check the vision weights and the image's pixel values")
            : node == "embed" ? " — the token embeddings are not finite" : " — check that node's weights (llama4 eval --dump to see it)";
        return new NonFiniteException(
            $"the forward produced non-finite values (NaN or infinity) in the logits; {where}{hint}. " +
            "The checkpoint or the inputs are damaged; nothing was sampled", node);
    }

    static string? FirstBadNode(ModelWeights weights, ComputeMode mode, IReadOnlyList<int> history, ImageTiles? images)
    {
        string? first = null;
        bool Bad(string name, float[] data)
        {
            if (first is not null) return false;
            foreach (var v in data) if (!float.IsFinite(v)) { first = name; return true; }
            return false;
        }
        Tensor? rows = null;
        using var vision = images is null ? null : new Llama4VisionGraph(weights, images.Count, mode);
        if (images is not null && vision is not null)
        {
            rows = vision.Forward(images.Pixels, images.Count, _ => first is null, (n, _, d) => Bad(n, d));
            if (first is not null) return first;
        }
        if (history.Count == 0 || history.Count > MaxDiagnosisTokens) return null;
        using var text = new Llama4TextGraph(weights, history.Count, mode);
        text.Forward(history.ToArray(), _ => first is null, (n, _, d) => Bad(n, d), rows);
        return first;
    }
}
