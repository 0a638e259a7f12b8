namespace Llama4Native.Cli.Verbs;

/// <summary>
/// `llama4 run`: the prompt runner. Text generation needs the decoder forward pass (issue 4) and the
/// tokenizer, KV cache and sampler (issue 5); until they land this verb says so plainly instead of
/// pretending, and points at what runs today.
/// </summary>
public static class RunVerb
{
    public const string Help = "generate text from a prompt (not yet: needs the decoder and generation issues)";

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr)
    {
        stderr.WriteLine("llama4 run: text generation is not implemented yet — it needs the decoder forward pass and the generation work.");
        stderr.WriteLine("What runs today: `llama4 selftest` (every kernel against the reference on this machine's device),");
        stderr.WriteLine("`llama4 kernels` (NVRTC compile table) and `llama4 bench-kernels`.");
        return 2;
    }
}
