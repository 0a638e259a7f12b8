namespace Llama4Native.Generation;

/// <summary>How to pick tokens and when to stop. Temperature 0 is greedy (argmax, ties to the lowest id).</summary>
public sealed record GenerationOptions
{
    /// <summary>The most tokens to generate (a stop token counts); 0 only feeds the prompt.</summary>
    public int MaxNewTokens { get; init; } = 256;
    /// <summary>Softmax temperature: 0 is greedy, 1 samples the model's distribution, higher flattens it (at most <see cref="MaxTemperature"/>).</summary>
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

    /// <summary>The largest temperature accepted (beyond it the distribution is uniform to float precision).</summary>
    public const float MaxTemperature = 100;
    /// <summary>The range of the frequency and presence penalties: OpenAI and vLLM stop at ±2; we allow up to ±1000
    /// (a penalty that large bans a token outright; any count × penalty stays finite in f32).</summary>
    public const float MaxAdditivePenalty = 1000;
    /// <summary>The largest repetition penalty accepted (HF allows any positive value; beyond 100 a token is erased).</summary>
    public const float MaxRepetitionPenalty = 100;

    /// <summary>
    /// Throws <see cref="ArgumentException"/> listing every setting out of its range. NaN and infinities are
    /// out of every range. Ranges: max new tokens ≥ 0; temperature [0, 100]; top-k ≥ 0; top-p (0, 1]; min-p [0, 1);
    /// repetition penalty (0, 100]; frequency and presence penalties [−1000, 1000]; stop token ids ≥ 0 (the upper bound,
    /// the vocabulary, is checked by the generator); stop strings not null.
    /// </summary>
    public void Validate()
    {
        var p = new List<string>();
        if (MaxNewTokens < 0) p.Add($"max new tokens ({MaxNewTokens}) must be ≥ 0");
        if (!(Temperature >= 0 && Temperature <= MaxTemperature)) p.Add($"temperature ({F(Temperature)}) must be in [0, {MaxTemperature}]");
        if (TopK < 0) p.Add($"top-k ({TopK}) must be ≥ 0");
        if (!(TopP > 0 && TopP <= 1)) p.Add($"top-p ({F(TopP)}) must be in (0, 1]");
        if (!(MinP >= 0 && MinP < 1)) p.Add($"min-p ({F(MinP)}) must be in [0, 1)");
        if (!(RepetitionPenalty > 0 && RepetitionPenalty <= MaxRepetitionPenalty)) p.Add($"repetition penalty ({F(RepetitionPenalty)}) must be in (0, {MaxRepetitionPenalty}]");
        if (!(Math.Abs(FrequencyPenalty) <= MaxAdditivePenalty)) p.Add($"frequency penalty ({F(FrequencyPenalty)}) must be in [-{MaxAdditivePenalty}, {MaxAdditivePenalty}]");
        if (!(Math.Abs(PresencePenalty) <= MaxAdditivePenalty)) p.Add($"presence penalty ({F(PresencePenalty)}) must be in [-{MaxAdditivePenalty}, {MaxAdditivePenalty}]");
        if (StopTokens is null) p.Add("stop tokens must not be null");
        else foreach (var t in StopTokens) if (t < 0) { p.Add($"stop token id ({t}) must be ≥ 0"); break; }
        if (StopStrings is null || StopStrings.Any(x => x is null)) p.Add("stop strings must not be null");
        if (p.Count > 0) throw new ArgumentException("generation options: " + string.Join("; ", p));
    }

    static string F(float v) => v.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
}

/// <summary>What one generation cost: prompt tokens, new tokens, time to first token and decode speed.</summary>
/// <param name="PromptTokens">Tokens fed before the first new one (only the part of the dialog not already cached).</param>
/// <param name="NewTokens">Tokens generated.</param>
/// <param name="TimeToFirstToken">From the call to the first new token (prompt processing included).</param>
/// <param name="Total">From the call to the end of generation.</param>
/// <param name="StopReason">Why it ended: a stop token or string, the token limit, the context limit; null if it did not end normally.</param>
public sealed record GenerationStats(int PromptTokens, int NewTokens, TimeSpan TimeToFirstToken, TimeSpan Total, string? StopReason)
{
    /// <summary>Decode speed: tokens after the first, per second after the first (0 with fewer than two tokens).</summary>
    public double DecodeTokensPerSecond => NewTokens > 1 ? (NewTokens - 1) / Math.Max(1e-9, (Total - TimeToFirstToken).TotalSeconds) : 0;
    /// <summary>One line for logs, e.g. "12 prompt tokens, 8 new; first token 40 ms; 25.0 tokens/s; stop: eot".</summary>
    public override string ToString() =>
        $"{PromptTokens} prompt tokens, {NewTokens} new; first token {TimeToFirstToken.TotalMilliseconds:0} ms; {DecodeTokensPerSecond:0.0} tokens/s; stop: {StopReason ?? "none"}";
}
