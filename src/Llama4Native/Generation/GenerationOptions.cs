namespace Llama4Native.Generation;

/// <summary>How to pick tokens and when to stop. Temperature 0 is greedy (argmax, ties to the lowest id).</summary>
public sealed record GenerationOptions
{
    public int MaxNewTokens { get; init; } = 256;
    public float Temperature { get; init; }
    /// <summary>Keep the k most likely tokens (0 = all).</summary>
    public int TopK { get; init; }
    /// <summary>Nucleus: the smallest set of most likely tokens whose probability reaches p (1 = all).</summary>
    public float TopP { get; init; } = 1;
    /// <summary>Drop tokens less likely than min_p × the most likely one (0 = none).</summary>
    public float MinP { get; init; }
    // The three penalties look at the tokens generated so far in this call (as vLLM/OpenAI do for frequency and
    // presence; HF's repetition penalty also counts the prompt — ours does not, so a long system prompt cannot
    // push the model off its own vocabulary).
    /// <summary>CTRL-style: a generated token's logit is divided by this when positive, multiplied when negative (1 = off).</summary>
    public float RepetitionPenalty { get; init; } = 1;
    /// <summary>Subtracted from a logit once per earlier occurrence of the token in the output (0 = off).</summary>
    public float FrequencyPenalty { get; init; }
    /// <summary>Subtracted from a logit when the token occurred in the output at all (0 = off).</summary>
    public float PresencePenalty { get; init; }
    /// <summary>Seed of the sampler's counter-based RNG: the same seed gives the same tokens.</summary>
    public ulong Seed { get; init; }
    /// <summary>Token ids that end generation, in addition to the model's own (the stop token is returned).</summary>
    public IReadOnlyList<int> StopTokens { get; init; } = [];
    /// <summary>Stop at the model's own stop tokens (eos, &lt;|eot|&gt;, &lt;|eom|&gt;). Off for fixed-length evaluation.</summary>
    public bool StopAtModelStops { get; init; } = true;
    /// <summary>Texts that end generation when they appear in the output (checked by the text layer).</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];

    public void Validate()
    {
        var p = new List<string>();
        if (MaxNewTokens < 0) p.Add($"max new tokens ({MaxNewTokens}) must be ≥ 0");
        if (!(Temperature >= 0)) p.Add($"temperature ({Temperature}) must be ≥ 0");
        if (TopK < 0) p.Add($"top-k ({TopK}) must be ≥ 0");
        if (!(TopP > 0 && TopP <= 1)) p.Add($"top-p ({TopP}) must be in (0, 1]");
        if (!(MinP >= 0 && MinP < 1)) p.Add($"min-p ({MinP}) must be in [0, 1)");
        if (!(RepetitionPenalty > 0)) p.Add($"repetition penalty ({RepetitionPenalty}) must be > 0");
        if (p.Count > 0) throw new ArgumentException("generation options: " + string.Join("; ", p));
    }
}

/// <summary>What one generation cost: prompt tokens, new tokens, time to first token and decode speed.</summary>
public sealed record GenerationStats(int PromptTokens, int NewTokens, TimeSpan TimeToFirstToken, TimeSpan Total, string? StopReason)
{
    public double DecodeTokensPerSecond => NewTokens > 1 ? (NewTokens - 1) / Math.Max(1e-9, (Total - TimeToFirstToken).TotalSeconds) : 0;
    public override string ToString() =>
        $"{PromptTokens} prompt tokens, {NewTokens} new; first token {TimeToFirstToken.TotalMilliseconds:0} ms; {DecodeTokensPerSecond:0.0} tokens/s; stop: {StopReason ?? "none"}";
}
