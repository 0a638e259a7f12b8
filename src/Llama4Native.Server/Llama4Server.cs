using System.Buffers;
using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Llama4Native.Generation;
using Llama4Native.Model;
using Llama4Native.Serving;
using Llama4Native.Vision;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Llama4Native.Server;

/// <summary>Where and how the server listens, and the bounds it puts on requests.</summary>
internal sealed record Llama4ServerOptions
{
    /// <summary>"127.0.0.1" (default), "localhost", "0.0.0.0"/"*" (every interface) or an IP address.</summary>
    public string Host { get; init; } = "127.0.0.1";
    /// <summary>0 picks a free port (see <see cref="Llama4Server.BaseAddress"/>).</summary>
    public int Port { get; init; } = 8000;
    /// <summary>When set, every /v1 request needs <c>Authorization: Bearer KEY</c> (else 401).</summary>
    public string? ApiKey { get; init; }
    /// <summary>The id of the served model in /v1/models and responses; requests naming another model get 404.</summary>
    public string ModelId { get; init; } = "llama4";
    public long MaxBodyBytes { get; init; } = 32L << 20;
    public int MaxMessages { get; init; } = 512;
    public int MaxImages { get; init; } = 8;
    public int MaxPromptChars { get; init; } = 1 << 20;
    public int MaxStops { get; init; } = 4;
    public int MaxStopChars { get; init; } = 256;
    public int MaxTools { get; init; } = 64;
    /// <summary>/v1/completions without max_tokens (OpenAI's default is 16).</summary>
    public int DefaultCompletionMaxTokens { get; init; } = 16;
    /// <summary>On SIGTERM/Ctrl-C or <see cref="Llama4Server.StopAsync"/>: how long running requests may finish before they are cancelled.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(30);
    /// <summary>Stop on SIGTERM/SIGINT (the CLI); off for a server hosted inside another process (tests).</summary>
    public bool HandleSignals { get; init; } = true;
    /// <summary>One line per finished request (method, path, status, tokens, time), or null.</summary>
    public Action<string>? Log { get; init; }
}

/// <summary>
/// The OpenAI-compatible HTTP server (ASP.NET Core / Kestrel from the shared framework) over a
/// <see cref="ServingScheduler"/>: <c>POST /v1/chat/completions</c> and <c>POST /v1/completions</c> (streaming as
/// server-sent events ending with <c>data: [DONE]</c>, and not), <c>GET /v1/models</c>, <c>GET /health</c>,
/// <c>GET /metrics</c> (Prometheus). Errors use OpenAI's JSON error shape: 400 bad field, 401 missing/wrong key,
/// 404 unknown path or model, 405, 413 body too large, 429 queue full and 503 shutting down (both with
/// Retry-After), 500 engine failure. A client that goes away cancels its sequence at the next step.
/// Shutdown (SIGTERM, Ctrl-C, <see cref="StopAsync"/>): admission stops at once (503), running requests get
/// <see cref="Llama4ServerOptions.ShutdownTimeout"/> to finish, then their connections are aborted, which cancels them.
/// </summary>
internal sealed class Llama4Server : IAsyncDisposable
{
    readonly WebApplication app;
    readonly ServingScheduler scheduler;
    readonly ITextCodec codec;
    readonly Llama4ImageProcessor? images;
    readonly Llama4ServerOptions options;
    readonly long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    /// <summary>The address the server listens on (with the actual port when <see cref="Llama4ServerOptions.Port"/> was 0).</summary>
    public Uri BaseAddress { get; private set; } = null!;
    public ServingScheduler Scheduler => scheduler;

    Llama4Server(WebApplication app, ServingScheduler scheduler, ITextCodec codec, Llama4ImageProcessor? images, Llama4ServerOptions options)
    {
        this.app = app; this.scheduler = scheduler; this.codec = codec; this.images = images; this.options = options;
    }

    /// <summary>Starts listening. The scheduler stays the caller's (dispose it after the server).</summary>
    public static async Task<Llama4Server> StartAsync(ServingScheduler scheduler, ITextCodec codec, Llama4ImageProcessor? images,
                                                      Llama4ServerOptions options, CancellationToken ct = default)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.ShutdownTimeout);
        if (!options.HandleSignals) builder.Services.AddSingleton<IHostLifetime, NoSignalsLifetime>();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = options.MaxBodyBytes;
            k.Limits.MaxRequestHeadersTotalSize = 64 << 10;
            switch (options.Host)
            {
                case "localhost": k.ListenLocalhost(options.Port); break;
                case "0.0.0.0" or "*" or "+": k.ListenAnyIP(options.Port); break;
                default:
                    if (!IPAddress.TryParse(options.Host, out var ip))
                        throw new ArgumentException($"--host '{options.Host}' is not an IP address (use 127.0.0.1, 0.0.0.0, ::1 or localhost)");
                    k.Listen(ip, options.Port);
                    break;
            }
        });
        var app = builder.Build();
        var server = new Llama4Server(app, scheduler, codec, images, options);
        server.Map();
        app.Lifetime.ApplicationStopping.Register(scheduler.StopAdmitting);
        await app.StartAsync(ct).ConfigureAwait(false);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        server.BaseAddress = new Uri(address.Replace("[::]", "127.0.0.1").Replace("0.0.0.0", "127.0.0.1"));
        return server;
    }

    /// <summary>Completes when the host stops (SIGTERM/Ctrl-C with <see cref="Llama4ServerOptions.HandleSignals"/>, or <see cref="StopAsync"/>).</summary>
    public Task WaitForShutdownAsync(CancellationToken ct = default) => app.WaitForShutdownAsync(ct);

    /// <summary>Graceful stop: no new requests, running ones get <see cref="Llama4ServerOptions.ShutdownTimeout"/>, then are cancelled.</summary>
    public Task StopAsync() { scheduler.StopAdmitting(); return app.StopAsync(); }

    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        await app.DisposeAsync().ConfigureAwait(false);
    }

    void Map()
    {
        app.Use(async (ctx, next) =>
        {
            var sw = System.Diagnostics.Stopwatch.StartNew();
            try
            {
                if (options.ApiKey is { } key && ctx.Request.Path.StartsWithSegments("/v1") && !Authorized(ctx.Request, key))
                    throw new ApiError(401, "invalid_request_error", "a valid API key is required: send 'Authorization: Bearer KEY' (the key the server was started with)",
                                       null, "invalid_api_key");
                await next(ctx).ConfigureAwait(false);
                if (ctx.Response.StatusCode == 405 && !ctx.Response.HasStarted)
                    throw new ApiError(405, "invalid_request_error", $"{ctx.Request.Method} is not allowed on {ctx.Request.Path}", null, "method_not_allowed");
            }
            catch (ApiError e) when (!ctx.Response.HasStarted)
            {
                await WriteError(ctx, e).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (ctx.RequestAborted.IsCancellationRequested) { }
            catch (Exception e) when (!ctx.Response.HasStarted && e is not OutOfMemoryException)
            {
                await WriteError(ctx, new ApiError(500, "server_error", "internal error: " + e.Message)).ConfigureAwait(false);
            }
            options.Log?.Invoke($"{ctx.Request.Method} {ctx.Request.Path} {ctx.Response.StatusCode} {sw.ElapsedMilliseconds} ms");
        });
        app.MapPost("/v1/chat/completions", ctx => Generate(ctx, chat: true));
        app.MapPost("/v1/completions", ctx => Generate(ctx, chat: false));
        app.MapGet("/v1/models", ctx => WriteJson(ctx, 200, w =>
        {
            w.WriteStartObject();
            w.WriteString("object", "list");
            w.WriteStartArray("data");
            w.WriteStartObject();
            w.WriteString("id", options.ModelId);
            w.WriteString("object", "model");
            w.WriteNumber("created", created);
            w.WriteString("owned_by", "llama4native");
            w.WriteNumber("max_model_len", scheduler.Engine.MaxContext);
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteEndObject();
        }));
        app.MapGet("/health", ctx =>
        {
            bool up = scheduler.Admitting;
            return WriteJson(ctx, up ? 200 : 503, w =>
            {
                w.WriteStartObject();
                w.WriteString("status", up ? "ok" : "shutting_down");
                w.WriteEndObject();
            });
        });
        app.MapGet("/metrics", async ctx =>
        {
            ctx.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
            await ctx.Response.WriteAsync(scheduler.Metrics.Render(scheduler.Snapshot()), ctx.RequestAborted).ConfigureAwait(false);
        });
        app.MapFallback(ctx => throw (Routes.TryGetValue(ctx.Request.Path.Value ?? "", out var method)
            ? new ApiError(405, "invalid_request_error", $"{ctx.Request.Method} is not allowed on {ctx.Request.Path}; use {method}", null, "method_not_allowed")
            : new ApiError(404, "invalid_request_error", $"no such endpoint: {ctx.Request.Method} {ctx.Request.Path} " +
                                                  "(this server has /v1/chat/completions, /v1/completions, /v1/models, /health, /metrics)", null, "not_found")));
    }

    static readonly Dictionary<string, string> Routes = new(StringComparer.OrdinalIgnoreCase)
    {
        ["/v1/chat/completions"] = "POST", ["/v1/completions"] = "POST", ["/v1/models"] = "GET", ["/health"] = "GET", ["/metrics"] = "GET",
    };

    static bool Authorized(HttpRequest request, string key)
    {
        var h = request.Headers.Authorization.ToString();
        if (!h.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)) return false;
        var given = Encoding.UTF8.GetBytes(h[7..].Trim());
        return CryptographicOperations.FixedTimeEquals(given, Encoding.UTF8.GetBytes(key));
    }

    async Task<JsonDocument> ReadBody(HttpContext ctx)
    {
        if (ctx.Request.ContentLength is { } len && len > options.MaxBodyBytes)
            throw new ApiError(413, "invalid_request_error", $"the body has {len} bytes; at most {options.MaxBodyBytes} are accepted", null, "request_too_large");
        try
        {
            return await JsonDocument.ParseAsync(ctx.Request.Body, new JsonDocumentOptions { MaxDepth = 32 }, ctx.RequestAborted).ConfigureAwait(false);
        }
        catch (BadHttpRequestException e) when (e.StatusCode == 413)
        {
            throw new ApiError(413, "invalid_request_error", $"the body is larger than the {options.MaxBodyBytes} bytes accepted", null, "request_too_large");
        }
        catch (JsonException e)
        {
            throw ApiError.BadRequest("the body is not valid JSON: " + e.Message);
        }
    }

    async Task Generate(HttpContext ctx, bool chat)
    {
        using var doc = await ReadBody(ctx).ConfigureAwait(false);
        var r = chat ? OpenAiRequests.Chat(doc.RootElement, options) : OpenAiRequests.Completion(doc.RootElement, options);
        if (r.Model is { } m && m != options.ModelId)
            throw new ApiError(404, "invalid_request_error", $"the model '{m}' does not exist here; this server serves '{options.ModelId}'", "model", "model_not_found");

        IReadOnlyList<int> ids;
        ImageTiles? tiles = null;
        try
        {
            if (chat) (ids, tiles) = ServingPrompt.Dialog(codec, images, r.Tools is { } tools ? ToolCalls.Render(r.Messages!, tools) : r.Messages!);
            else ids = r.PromptIds ?? ServingPrompt.Plain(codec, r.PromptText!);
        }
        catch (Exception e) when (e is ImageException or NotSupportedException or ArgumentException or ImageTokenMismatchException)
        {
            throw ApiError.BadRequest(e.Message, chat ? "messages" : "prompt");
        }
        int context = scheduler.Engine.MaxContext;
        if (ids.Count >= context)
            throw ApiError.BadRequest($"the prompt has {ids.Count} tokens but this server's context is {context} (prompt + reply); shorten it", chat ? "messages" : "prompt", "context_length_exceeded");
        var o = r.Options with { MaxNewTokens = Math.Min(r.MaxTokens ?? context, context - ids.Count) };

        ServingSequence seq;
        try
        {
            seq = scheduler.Submit(new ServingRequest { Prompt = ids, Options = o, Images = tiles, Cancellation = ctx.RequestAborted });
        }
        catch (ServerOverloadedException e) { throw new ApiError(429, "server_overloaded", e.Message, null, "server_at_capacity", e.RetryAfter); }
        catch (ServerShuttingDownException e) { throw new ApiError(503, "service_unavailable", e.Message, null, "shutting_down", e.RetryAfter); }
        catch (ContextLengthException e) { throw ApiError.BadRequest(e.Message, chat ? "messages" : "prompt", "context_length_exceeded"); }
        catch (ArgumentException e) { throw ApiError.BadRequest(e.Message); }

        string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        string obj = chat ? "chat.completion" : "text_completion";
        if (!r.Stream)
        {
            var text = new StringBuilder();
            await foreach (var piece in seq.Pieces.ReadAllAsync(ctx.RequestAborted).ConfigureAwait(false)) text.Append(piece.Text);
            var result = await seq.Completion.ConfigureAwait(false);
            if (result.Reason == FinishReason.Error) throw new ApiError(500, "server_error", "generation failed: " + result.Detail);
            if (result.Reason == FinishReason.Cancelled) throw new ApiError(503, "service_unavailable", "the request was cancelled (" + result.Detail + ")", null, "cancelled", TimeSpan.FromSeconds(1));
            var calls = r.Tools is null ? null : ToolCalls.Parse(text.ToString());
            await WriteJson(ctx, 200, w =>
            {
                w.WriteStartObject();
                Head(w, id, obj, now);
                w.WriteStartArray("choices");
                w.WriteStartObject();
                w.WriteNumber("index", 0);
                if (chat)
                {
                    w.WriteStartObject("message");
                    w.WriteString("role", "assistant");
                    if (calls is null) w.WriteString("content", text.ToString());
                    else
                    {
                        w.WriteNull("content");
                        WriteCalls(w, calls, indexed: false);
                    }
                    w.WriteEndObject();
                }
                else w.WriteString("text", text.ToString());
                w.WriteNull("logprobs");
                w.WriteString("finish_reason", calls is null ? Finish(result.Reason) : "tool_calls");
                w.WriteEndObject();
                w.WriteEndArray();
                Usage(w, result);
                w.WriteEndObject();
            }).ConfigureAwait(false);
            return;
        }

        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "text/event-stream; charset=utf-8";
        ctx.Response.Headers.CacheControl = "no-cache";
        ctx.Response.Headers["X-Accel-Buffering"] = "no";
        var ct = ctx.RequestAborted;
        if (chat) await Event(ctx, w => Chunk(w, id, now, role: true, content: "", finish: null), ct).ConfigureAwait(false);
        // With tools the reply is held back until it is known to be a call or content (a call is never half-streamed).
        var held = r.Tools is null ? null : new StringBuilder();
        await foreach (var piece in seq.Pieces.ReadAllAsync(ct).ConfigureAwait(false))
        {
            if (piece.Text.Length == 0) continue;
            if (held is not null) { held.Append(piece.Text); continue; }
            if (chat) await Event(ctx, w => Chunk(w, id, now, role: false, content: piece.Text, finish: null), ct).ConfigureAwait(false);
            else await Event(ctx, w => TextChunk(w, id, now, piece.Text, null), ct).ConfigureAwait(false);
        }
        var done = await seq.Completion.ConfigureAwait(false);
        if (done.Reason is FinishReason.Error or FinishReason.Cancelled)
        {
            var err = done.Reason == FinishReason.Error ? new ApiError(500, "server_error", "generation failed: " + done.Detail)
                                                        : new ApiError(503, "service_unavailable", "the request was cancelled (" + done.Detail + ")", null, "cancelled");
            await Event(ctx, err.Write, ct).ConfigureAwait(false);
        }
        else
        {
            var calls = held is null ? null : ToolCalls.Parse(held.ToString());
            if (held is { Length: > 0 } && calls is null) await Event(ctx, w => Chunk(w, id, now, role: false, content: held.ToString(), finish: null), ct).ConfigureAwait(false);
            if (calls is not null)
            {
                await Event(ctx, w =>
                {
                    w.WriteStartObject();
                    Head(w, id, "chat.completion.chunk", now);
                    w.WriteStartArray("choices");
                    w.WriteStartObject();
                    w.WriteNumber("index", 0);
                    w.WriteStartObject("delta");
                    WriteCalls(w, calls, indexed: true);
                    w.WriteEndObject();
                    w.WriteNull("logprobs");
                    w.WriteNull("finish_reason");
                    w.WriteEndObject();
                    w.WriteEndArray();
                    w.WriteEndObject();
                }, ct).ConfigureAwait(false);
                await Event(ctx, w => Chunk(w, id, now, role: false, content: null, finish: "tool_calls"), ct).ConfigureAwait(false);
            }
            else if (chat) await Event(ctx, w => Chunk(w, id, now, role: false, content: null, finish: Finish(done.Reason)), ct).ConfigureAwait(false);
            else await Event(ctx, w => TextChunk(w, id, now, "", Finish(done.Reason)), ct).ConfigureAwait(false);
            if (r.IncludeUsage)
                await Event(ctx, w =>
                {
                    w.WriteStartObject();
                    Head(w, id, chat ? "chat.completion.chunk" : "text_completion", now);
                    w.WriteStartArray("choices");
                    w.WriteEndArray();
                    Usage(w, done);
                    w.WriteEndObject();
                }, ct).ConfigureAwait(false);
        }
        await ctx.Response.WriteAsync("data: [DONE]\n\n", ct).ConfigureAwait(false);
        await ctx.Response.Body.FlushAsync(ct).ConfigureAwait(false);
        options.Log?.Invoke($"  {id}: {done.PromptTokens} prompt + {done.CompletionTokens} tokens, {Finish(done.Reason)}, first token {done.TimeToFirstToken.TotalMilliseconds:0} ms");
    }

    static void WriteCalls(Utf8JsonWriter w, List<(string Name, string Arguments)> calls, bool indexed)
    {
        w.WriteStartArray("tool_calls");
        for (int i = 0; i < calls.Count; i++)
        {
            w.WriteStartObject();
            if (indexed) w.WriteNumber("index", i);
            w.WriteString("id", "call_" + Guid.NewGuid().ToString("N")[..24]);
            w.WriteString("type", "function");
            w.WriteStartObject("function");
            w.WriteString("name", calls[i].Name);
            w.WriteString("arguments", calls[i].Arguments);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    static string Finish(FinishReason r) => r switch { FinishReason.Stop => "stop", FinishReason.Length => "length", FinishReason.Cancelled => "cancelled", _ => "error" };

    void Head(Utf8JsonWriter w, string id, string obj, long now)
    {
        w.WriteString("id", id);
        w.WriteString("object", obj);
        w.WriteNumber("created", now);
        w.WriteString("model", options.ModelId);
    }

    static void Usage(Utf8JsonWriter w, ServingResult r)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", r.PromptTokens);
        w.WriteNumber("completion_tokens", r.CompletionTokens);
        w.WriteNumber("total_tokens", r.PromptTokens + r.CompletionTokens);
        w.WriteEndObject();
    }

    void Chunk(Utf8JsonWriter w, string id, long now, bool role, string? content, string? finish)
    {
        w.WriteStartObject();
        Head(w, id, "chat.completion.chunk", now);
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        w.WriteStartObject("delta");
        if (role) w.WriteString("role", "assistant");
        if (content is not null) w.WriteString("content", content);
        w.WriteEndObject();
        w.WriteNull("logprobs");
        if (finish is null) w.WriteNull("finish_reason"); else w.WriteString("finish_reason", finish);
        w.WriteEndObject();
        w.WriteEndArray();
        w.WriteEndObject();
    }

    void TextChunk(Utf8JsonWriter w, string id, long now, string text, string? finish)
    {
        w.WriteStartObject();
        Head(w, id, "text_completion", now);
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", 0);
        w.WriteString("text", text);
        w.WriteNull("logprobs");
        if (finish is null) w.WriteNull("finish_reason"); else w.WriteString("finish_reason", finish);
        w.WriteEndObject();
        w.WriteEndArray();
        w.WriteEndObject();
    }

    static async Task Event(HttpContext ctx, Action<Utf8JsonWriter> body, CancellationToken ct)
    {
        var buf = new ArrayBufferWriter<byte>(512);
        buf.Write("data: "u8);
        using (var w = new Utf8JsonWriter(buf)) body(w);
        buf.Write("\n\n"u8);
        await ctx.Response.Body.WriteAsync(buf.WrittenMemory, ct).ConfigureAwait(false);
        await ctx.Response.Body.FlushAsync(ct).ConfigureAwait(false);
    }

    static async Task WriteJson(HttpContext ctx, int status, Action<Utf8JsonWriter> body)
    {
        var buf = new ArrayBufferWriter<byte>(512);
        using (var w = new Utf8JsonWriter(buf)) body(w);
        ctx.Response.StatusCode = status;
        ctx.Response.ContentType = "application/json";
        await ctx.Response.Body.WriteAsync(buf.WrittenMemory, ctx.RequestAborted).ConfigureAwait(false);
    }

    static Task WriteError(HttpContext ctx, ApiError e)
    {
        if (e.RetryAfter is { } ra) ctx.Response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling(ra.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (e.Status == 401) ctx.Response.Headers.WWWAuthenticate = "Bearer";
        return WriteJson(ctx, e.Status, e.Write);
    }

    /// <summary>A host lifetime that leaves signals alone (a server inside a test or another app).</summary>
    sealed class NoSignalsLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
