using System.Runtime.CompilerServices;
using System.Text;
using Mamba.Generation;
using Microsoft.Extensions.AI;

namespace Mamba;

/// <summary>
/// <see cref="IChatClient"/> over a <see cref="MambaModel"/>. Base Mamba models have no chat template, so the
/// conversation is written as a plain transcript and the model continues it:
/// <code>
/// System: {system text}
///
/// User: {user text}
/// Assistant: {assistant text}
/// User: {user text}
/// Assistant:
/// </code>
/// Generation stops at eos, at the next "\nUser:" line (added to the caller's stop sequences) or at the
/// token limit; the answer is trimmed of surrounding whitespace. Option mapping: MaxOutputTokens →
/// MaxNewTokens, Temperature (a value &gt; 0 also turns sampling on), TopP, TopK, Seed, StopSequences;
/// other options (penalties, tools, response format) are ignored. Each call runs its own state, so one
/// client can serve concurrent calls.
/// </summary>
public sealed class MambaChatClient : IChatClient
{
    /// <summary>The line prefix that starts a user turn; generation stops when the model writes it.</summary>
    public const string UserStop = "\nUser:";

    private readonly MambaModel _model;

    /// <summary>Wraps <paramref name="model"/> (not owned: disposing the client leaves the model loaded).</summary>
    public MambaChatClient(MambaModel model)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        Metadata = new ChatClientMetadata("mamba-dotnet", null, Path.GetFileName(Path.TrimEndingDirectorySeparator(model.Directory)));
    }

    /// <summary>Provider name, model id.</summary>
    public ChatClientMetadata Metadata { get; }

    /// <summary>The transcript the model continues for <paramref name="messages"/>.</summary>
    /// <exception cref="ArgumentNullException"><paramref name="messages"/> is null.</exception>
    /// <exception cref="ArgumentException">A message in the list is null.</exception>
    public static string FormatPrompt(IEnumerable<ChatMessage> messages)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var builder = new StringBuilder();
        int index = 0;
        foreach (var message in messages)
        {
            if (message is null) throw new ArgumentException($"message {index} is null", nameof(messages));
            index++;
            var text = message.Text.Trim();
            if (message.Role == ChatRole.System) builder.Append("System: ").Append(text).Append("\n\n");
            else if (message.Role == ChatRole.Assistant) builder.Append("Assistant: ").Append(text).Append('\n');
            else builder.Append("User: ").Append(text).Append('\n');
        }
        builder.Append("Assistant:");
        return builder.ToString();
    }

    /// <summary>The <see cref="ChatOptions.AdditionalProperties"/> key naming a loaded LoRA adapter to answer with.</summary>
    public const string AdapterProperty = "adapter";

    /// <summary>The generation options a chat request maps to.</summary>
    public GenerationOptions MapOptions(ChatOptions? options)
    {
        var o = _model.DefaultGenerationOptions;
        var stops = new List<string> { UserStop };
        if (options?.StopSequences is { } extra) stops.AddRange(extra);
        o = o with { StopSequences = stops };
        if (options is null) return o;
        if (options.MaxOutputTokens is { } max) o = o with { MaxNewTokens = max };
        if (options.Temperature is { } t) o = t > 0 ? o with { Temperature = t, DoSample = true } : o with { DoSample = false };
        if (options.TopP is { } p) o = o with { TopP = p };
        if (options.TopK is { } k) o = o with { TopK = k };
        if (options.Seed is { } seed) o = o with { Seed = unchecked((int)seed) };
        // A loaded LoRA adapter by name (MambaModel.LoadAdapter), per request.
        if (options.AdditionalProperties?.TryGetValue(AdapterProperty, out var adapter) == true && adapter is string name) o = o with { Adapter = name };
        return o;
    }

    /// <inheritdoc />
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var result = await _model.GenerateAsync(FormatPrompt(messages), MapOptions(options), cancellationToken).ConfigureAwait(false);
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, result.Text.Trim()))
        {
            FinishReason = result.FinishReason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop,
            ModelId = Metadata.DefaultModelId,
            Usage = new UsageDetails
            {
                InputTokenCount = result.Usage.PromptTokens,
                OutputTokenCount = result.Usage.GeneratedTokens,
                TotalTokenCount = result.Usage.TotalTokens,
            },
        };
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        bool started = false;
        await foreach (var piece in _model.GenerateStreamingAsync(FormatPrompt(messages), MapOptions(options), cancellationToken).ConfigureAwait(false))
        {
            // Drop the space after "Assistant:" so the streamed text equals the non-streaming answer's start.
            var text = started ? piece : piece.TrimStart();
            if (text.Length == 0) continue;
            started = true;
            yield return new ChatResponseUpdate(ChatRole.Assistant, text) { ModelId = Metadata.DefaultModelId };
        }
    }

    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return Metadata;
        if (serviceType.IsInstanceOfType(_model)) return _model;
        if (serviceType.IsInstanceOfType(this)) return this;
        return null;
    }

    /// <inheritdoc />
    public void Dispose() { }
}
