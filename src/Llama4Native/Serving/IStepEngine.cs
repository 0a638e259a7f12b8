using Llama4Native.Generation;
using Llama4Native.Model;

namespace Llama4Native.Serving;

/// <summary>
/// One sequence's work in a step: prompt tokens to prefill (a piece of the prompt), or the one token to decode
/// (the token sampled for it in the previous step). When <see cref="Sample"/> is set the engine chooses the next
/// token from the logits after the piece's last token, with the slot's own sampling settings and seed.
/// </summary>
internal readonly record struct StepPiece(int Slot, ReadOnlyMemory<int> Tokens, bool Sample, bool Decode);

/// <summary>What a step did for one piece: the sampled token (−1 when the piece did not sample), or the error
/// that made this sequence fail (the others in the step go on).</summary>
internal readonly record struct StepResult(int Token, Exception? Error);

/// <summary>
/// The model side of serving: sequence slots, each with its own KV memory, advanced together one step at a
/// time. The scheduler (<see cref="ServingScheduler"/>) decides what each step holds — which sequences, which
/// prefill pieces, which decodes — and owns stops, limits and cancellation; an engine only computes.
/// <para>
/// The contract is written for a batched engine: <see cref="Step"/> receives every active sequence's piece of the
/// step at once (prefill pieces and decode rows mixed, different lengths), so an implementation that runs them as
/// one forward with a paged KV cache (issue #13 part 1) replaces <see cref="SequentialStepEngine"/> without any
/// change to the scheduler or the server. The requirement it must keep: a sequence's tokens depend only on its
/// own prompt, settings and seed — never on what else is in the step (the scheduler cuts prefill pieces from the
/// request alone, so piece boundaries do not depend on the load either).
/// </para>
/// </summary>
internal interface IStepEngine : IDisposable
{
    /// <summary>Sequences held at once (the most a step can hold).</summary>
    int Slots { get; }
    /// <summary>Tokens one sequence can hold (prompt + generated).</summary>
    int MaxContext { get; }
    /// <summary>KV capacity is counted in blocks of this many token positions (a paged cache's block size; an
    /// engine that reserves a whole context per slot says <see cref="MaxContext"/>).</summary>
    int KvBlockTokens { get; }
    /// <summary>KV blocks in all.</summary>
    int KvBlocks { get; }
    /// <summary>The largest prefill piece the engine takes in one step for one sequence.</summary>
    int MaxPrefillPiece { get; }
    int Vocab { get; }
    /// <summary>The model's own stop tokens (eos, &lt;|eot|&gt;, &lt;|eom|&gt;).</summary>
    IReadOnlySet<int> ModelStops { get; }
    /// <summary>The image token id (&lt;|patch|&gt;) of the model, or −1 for a text-only model.</summary>
    int ImageToken { get; }

    /// <summary>Takes <paramref name="slot"/> for a new sequence: its sampling settings and seed, and the
    /// processed tiles of its prompt's images (all of its &lt;|patch|&gt; rows come in its first piece).</summary>
    void Begin(int slot, GenerationOptions options, ImageTiles? images);
    /// <summary>Runs one step over <paramref name="pieces"/> (at most one per slot); <paramref name="results"/>[i]
    /// answers pieces[i].</summary>
    void Step(ReadOnlySpan<StepPiece> pieces, Span<StepResult> results);
    /// <summary>Token positions the slot's sequence holds.</summary>
    int Position(int slot);
    /// <summary>Ends the slot's sequence and frees its KV at once.</summary>
    void End(int slot);
}
