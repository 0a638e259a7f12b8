namespace Llama4Native.Checkpoints;

/// <summary>
/// A checkpoint that cannot be loaded: a malformed safetensors file, a broken index, tensors that do not
/// match the config. The message names the file, the tensor when there is one, what is wrong and what to
/// do about it. Loading a hostile or broken checkpoint must end in this exception and nothing else.
/// </summary>
public sealed class CheckpointException : Exception
{
    /// <summary>The file at fault (a shard, the index, or the model directory).</summary>
    public string File { get; }
    /// <summary>The tensor at fault, when one tensor is.</summary>
    public string? Tensor { get; }
    /// <summary>Every problem found; one for a parse error, possibly many for a name/shape check.</summary>
    public IReadOnlyList<string> Problems { get; }

    internal CheckpointException(string file, string? tensor, string problem, Exception? inner = null)
        : base(Format(file, tensor, [problem]), inner)
    {
        File = file; Tensor = tensor; Problems = [problem];
    }

    internal CheckpointException(string file, IReadOnlyList<string> problems)
        : base(Format(file, null, problems))
    {
        File = file; Problems = problems;
    }

    static string Format(string file, string? tensor, IReadOnlyList<string> problems)
    {
        string where = tensor is null ? file : $"{file}: tensor '{tensor}'";
        return problems.Count == 1
            ? $"{where}: {problems[0]}"
            : $"{where}: {problems.Count} problems:\n  - " + string.Join("\n  - ", problems);
    }
}
