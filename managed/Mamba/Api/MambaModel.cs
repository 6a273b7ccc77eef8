using System.Runtime.CompilerServices;
using Mamba.Compute;
using Mamba.Generation;
using Mamba.Lora;
using Mamba.Model;
using Mamba.Tokenization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Mamba;

/// <summary>
/// A loaded Mamba language model: weights on a backend, the tokenizer and the default generation settings
/// of a Hugging Face model folder. Thread-safe to share; per-sequence state lives in <see cref="MambaSession"/>
/// (or inside each generate call). <see cref="Dispose"/> frees everything.
/// </summary>
/// <example>
/// <code>
/// using var model = MambaModel.Load("mamba-130m-hf");
/// var result = await model.GenerateAsync("The capital of France is", new GenerationOptions { MaxNewTokens = 20 });
/// Console.WriteLine(result.Text);
/// </code>
/// </example>
public sealed class MambaModel : IDisposable
{
    private readonly ILogger _log;
    private bool _disposed;

    private MambaModel(MambaForCausalLM network, MambaTokenizer? tokenizer, GenerationOptions defaults, BackendDescription backend, string directory, ILogger log)
    {
        Network = network;
        Tokenizer = tokenizer;
        DefaultGenerationOptions = defaults;
        Backend = backend;
        Directory = directory;
        _log = log;
    }

    /// <summary>Loads a model folder: config.json, weights, tokenizer.json (optional) and generation_config.json (optional).</summary>
    public static MambaModel Load(string directory, MambaModelOptions? options = null) =>
        LoadCore(directory, options ?? new MambaModelOptions(), null, CancellationToken.None);

    /// <summary>Loads a model folder on a worker thread, reporting progress and honouring cancellation between stages.</summary>
    public static Task<MambaModel> LoadAsync(string directory, MambaModelOptions? options = null, IProgress<ModelLoadProgress>? progress = null,
        CancellationToken cancellationToken = default) =>
        Task.Run(() => LoadCore(directory, options ?? new MambaModelOptions(), progress, cancellationToken), cancellationToken);

    private static MambaModel LoadCore(string directory, MambaModelOptions options, IProgress<ModelLoadProgress>? progress, CancellationToken ct)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        options.Validate();
        var log = (options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger<MambaModel>();
        progress?.Report(new ModelLoadProgress("backend", 0.0));
        var backend = BackendSelector.Create(options, out var description, out var activation);
        try
        {
            ct.ThrowIfCancellationRequested();
            progress?.Report(new ModelLoadProgress("weights", 0.1));
            var weights = CheckpointLoader.LoadWeights(directory);
            log.LogInformation("Loaded {Directory}: {Summary}, {Parameters:N0} parameters stored as {DType}", directory, weights.Config.Summary(), weights.ParameterCount, weights.StoredDType);
            ct.ThrowIfCancellationRequested();
            progress?.Report(new ModelLoadProgress("upload", 0.6));
            var network = new MambaForCausalLM(weights, backend, activation, ownsBackend: true, adoptWeights: true);
            try
            {
                ct.ThrowIfCancellationRequested();
                progress?.Report(new ModelLoadProgress("tokenizer", 0.8));
                MambaTokenizer? tokenizer = File.Exists(Path.Combine(directory, "tokenizer.json")) ? MambaTokenizer.FromDirectory(directory) : null;
                if (tokenizer is null) log.LogWarning("{Directory} has no tokenizer.json: only token-id generation is available", directory);
                var generationConfig = Path.Combine(directory, "generation_config.json");
                var defaults = File.Exists(generationConfig) ? GenerationOptions.FromGenerationConfig(generationConfig) : new GenerationOptions();
                progress?.Report(new ModelLoadProgress("ready", 1.0));
                return new MambaModel(network, tokenizer, defaults, description, directory, log);
            }
            catch
            {
                network.Dispose();
                throw;
            }
        }
        catch
        {
            backend.Dispose();
            throw;
        }
    }

    /// <summary>The folder the model was loaded from.</summary>
    public string Directory { get; }

    /// <summary>The network (forward passes, caches) underneath.</summary>
    public MambaForCausalLM Network { get; }

    /// <summary>The configuration.</summary>
    public MambaConfig Config => Network.Config;

    /// <summary>The tokenizer of the folder, or null when it has no tokenizer.json.</summary>
    public MambaTokenizer? Tokenizer { get; }

    /// <summary>Defaults from generation_config.json (or transformers' defaults).</summary>
    public GenerationOptions DefaultGenerationOptions { get; }

    /// <summary>What runs the model (kind, device, native library, why CUDA was not used).</summary>
    public BackendDescription Backend { get; }

    /// <summary>True when config.json marks the weights as untrained (a random-initialised placeholder).</summary>
    public bool IsUntrained => Config.ExtraKeys.TryGetValue("mamba_dotnet_untrained", out var v) && v?.GetValueKind() == System.Text.Json.JsonValueKind.True;

    /// <summary>A new session (its own recurrent state) over this model.</summary>
    public MambaSession CreateSession()
    {
        ThrowIfDisposed();
        return new MambaSession(this);
    }

    /// <summary>
    /// Loads a PEFT LoRA adapter folder (<c>adapter_config.json</c>, <c>adapter_model.safetensors</c>) onto this model
    /// without changing the base weights, under <paramref name="name"/> (default: the folder's name). Generate with it
    /// by setting <see cref="GenerationOptions.Adapter"/> to the name; several adapters can be loaded and chosen per
    /// request. Unmerged adapters decode on the op path; <see cref="MambaForCausalLM.MergeAdapter"/> folds one into the
    /// weights for full speed.
    /// </summary>
    /// <exception cref="MambaFormatException">The folder is not a usable adapter, or it does not fit this model.</exception>
    /// <exception cref="MambaConfigException">adapter_config.json has a bad value.</exception>
    /// <exception cref="ArgumentException">An adapter of that name is already loaded.</exception>
    public LoadedLoraAdapter LoadAdapter(string directory, string? name = null)
    {
        ThrowIfDisposed();
        return Network.LoadAdapter(LoraAdapter.Load(directory), name);
    }

    /// <summary>Frees the adapter loaded under <paramref name="name"/>; false when none is.</summary>
    public bool UnloadAdapter(string name)
    {
        ThrowIfDisposed();
        var adapter = Network.Adapters.FirstOrDefault(a => a.Name == name);
        adapter?.Dispose();
        return adapter is not null;
    }

    /// <summary>Tokenizes a prompt (no special tokens added, as transformers does for these models).</summary>
    public IReadOnlyList<int> Encode(string text) => RequireTokenizer().Encode(text);

    /// <summary>The eos ids in effect for <paramref name="options"/>.</summary>
    internal IReadOnlyList<int> EosFor(GenerationOptions options) => options.EosTokenIds ?? DefaultGenerationOptions.EosTokenIds ?? Config.EosTokenIds;

    /// <summary>Generates from a text prompt.</summary>
    public async Task<GenerationResult> GenerateAsync(string prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        (await GenerateBatchAsync([prompt], options, cancellationToken).ConfigureAwait(false))[0];

    /// <summary>Generates from prompt token ids.</summary>
    public async Task<GenerationResult> GenerateAsync(IReadOnlyList<int> promptIds, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        (await GenerateBatchAsync([promptIds], options, cancellationToken).ConfigureAwait(false))[0];

    /// <summary>
    /// Generates from several prompts of any lengths in one batch (left padding with an attention mask; a
    /// finished row leaves the batch). With greedy decoding and <c>use_bias = false</c> each row equals running
    /// that prompt alone.
    /// </summary>
    public Task<IReadOnlyList<GenerationResult>> GenerateBatchAsync(IReadOnlyList<string> prompts, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        var tokenizer = RequireTokenizer();
        return GenerateBatchAsync(prompts.Select(p => tokenizer.Encode(p ?? throw new ArgumentNullException(nameof(prompts)))).ToArray(), options, cancellationToken);
    }

    /// <summary>Generates from several token-id prompts in one batch.</summary>
    public Task<IReadOnlyList<GenerationResult>> GenerateBatchAsync(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions? options = null,
        CancellationToken cancellationToken = default) =>
        GenerateWithCallbackAsync(prompts, options ?? DefaultGenerationOptions, null, cancellationToken);

    /// <summary>
    /// Generates from a text prompt and yields the text as it is produced. Pieces never split a UTF-8
    /// character and never contain part of a stop sequence. Cancellation is honoured between tokens.
    /// </summary>
    public async IAsyncEnumerable<string> GenerateStreamingAsync(string prompt, GenerationOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var tokenizer = RequireTokenizer();
        using var loop = StartGeneration(tokenizer, [tokenizer.Encode(prompt)], options ?? DefaultGenerationOptions);
        await foreach (var produced in loop.RunAsync(cancellationToken).ConfigureAwait(false))
            foreach (var token in produced)
                if (token.Text.Length > 0) yield return token.Text;
    }

    /// <summary>
    /// Generates a batch, calling <paramref name="onToken"/> (row, token, new text) after every token (the CLI streams with it).
    /// Every generate method of this class runs through here or <see cref="GenerateStreamingAsync"/>, both over one <see cref="GenerationLoop"/>.
    /// </summary>
    internal async Task<IReadOnlyList<GenerationResult>> GenerateWithCallbackAsync(IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options,
        Action<int, int, string>? onToken, CancellationToken cancellationToken)
    {
        using var loop = StartGeneration(Tokenizer, prompts, options);
        await foreach (var produced in loop.RunAsync(cancellationToken).ConfigureAwait(false))
            if (onToken is not null)
                foreach (var (row, token, text) in produced) onToken(row, token, text);
        return loop.Results();
    }

    private GenerationLoop StartGeneration(MambaTokenizer? tokenizer, IReadOnlyList<IReadOnlyList<int>> prompts, GenerationOptions options)
    {
        ThrowIfDisposed();
        return GenerationLoop.ForPrompts(Network, tokenizer, prompts, options, EosFor(options));
    }

    /// <summary>A <c>Microsoft.Extensions.AI</c> chat client over this model (see <see cref="MambaChatClient"/> for the prompt format).</summary>
    public Microsoft.Extensions.AI.IChatClient AsChatClient() => new MambaChatClient(this);

    private MambaTokenizer RequireTokenizer()
    {
        ThrowIfDisposed();
        return Tokenizer ?? throw new InvalidOperationException($"the model folder '{Directory}' has no tokenizer.json: pass token ids instead of text");
    }

    internal void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>Frees the weights, the backend and every native resource.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Network.Dispose();
    }
}
