using Mamba.Compute;
using Mamba.Lora;

namespace Mamba.Model;

public sealed partial class MambaForCausalLM
{
    private readonly List<LoadedLoraAdapter> _adapters = [];

    /// <summary>
    /// Uploads <paramref name="adapter"/>'s factors (in the activation dtype) for the unmerged forward, under
    /// <paramref name="name"/> (default: the adapter folder's name, else "default"). The base weights do not change;
    /// pass the result as <see cref="ForwardOptions.Adapter"/> to apply it to a call. Several adapters can be loaded and
    /// used by different calls.
    /// </summary>
    /// <exception cref="MambaFormatException">The adapter's shapes do not fit this model.</exception>
    /// <exception cref="ArgumentException">An adapter of that name is already loaded.</exception>
    public LoadedLoraAdapter LoadAdapter(LoraAdapter adapter, string? name = null)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        ObjectDisposedException.ThrowIf(_disposed, this);
        name ??= adapter.SourceDirectory is { } dir ? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(dir))) : "default";
        lock (_adapters)
        {
            _adapters.RemoveAll(a => a.IsDisposed);
            if (_adapters.Any(a => a.Name == name))
                throw new ArgumentException($"an adapter named '{name}' is already loaded; unload it or choose another name", nameof(name));
            var loaded = new LoadedLoraAdapter(name, adapter, Backend, ActivationDType, Config);
            _adapters.Add(loaded);
            return loaded;
        }
    }

    /// <summary>The adapters loaded on this model and not disposed.</summary>
    public IReadOnlyList<LoadedLoraAdapter> Adapters
    {
        get
        {
            lock (_adapters) return _adapters.Where(a => !a.IsDisposed).ToArray();
        }
    }

    /// <summary>The LoRA context of a call, after checking the adapter belongs to this model.</summary>
    private LoraCall? LoraCallFor(LoadedLoraAdapter? adapter, Scratch scratch)
    {
        if (adapter is null) return null;
        ObjectDisposedException.ThrowIf(adapter.IsDisposed, adapter);
        if (!ReferenceEquals(adapter.Backend, Backend) || !ReferenceEquals(adapter.ModelConfig, Config))
            throw new ArgumentException($"adapter '{adapter.Name}' was loaded on another model", nameof(adapter));
        var slots = new Dictionary<string, DeviceTensor>(StringComparer.Ordinal);
        return new LoraCall(adapter, (slot, dtype, shape) =>
        {
            var key = $"{slot}:{dtype}:{string.Join("x", shape)}";
            if (!slots.TryGetValue(key, out var tensor)) slots[key] = tensor = scratch.Rent(dtype, shape);
            return tensor;
        });
    }

    private void ReleaseAdapters()
    {
        lock (_adapters)
        {
            foreach (var a in _adapters) a.Dispose();
            _adapters.Clear();
        }
    }
    /// <summary>
    /// Adds <paramref name="adapter"/>'s deltas into the base weights (PEFT's <c>merge</c>): every adapted linear weight
    /// gets scale·B·A, the embedding scale·(B·A)ᵀ. With tied embeddings the lm_head is the embedding matrix, so it changes
    /// too — what PEFT's <c>merge_and_unload()</c> gives (its unmerged model applies the embedding adapter to the lookup
    /// only). 16-bit weights are rounded once after the addition. Not safe to call while the model runs.
    /// </summary>
    /// <exception cref="MambaFormatException">The adapter's shapes do not fit this model.</exception>
    public void MergeAdapter(LoraAdapter adapter) => ApplyAdapter(adapter, +1f);

    /// <summary>
    /// Subtracts what <see cref="MergeAdapter"/> added (PEFT's <c>unmerge</c>). The result equals the base weights up to
    /// float32 rounding (not bit for bit), and in 16-bit storage up to that storage's rounding.
    /// </summary>
    /// <exception cref="MambaFormatException">The adapter's shapes do not fit this model.</exception>
    public void UnmergeAdapter(LoraAdapter adapter) => ApplyAdapter(adapter, -1f);

    private void ApplyAdapter(LoraAdapter adapter, float sign)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        adapter.ValidateAgainst(Config);
        foreach (var id in adapter.Modules.Keys)
        {
            var parameter = _parameters[BaseParameter(id.Target), id.IsEmbedding ? -1 : id.Layer];
            var w = new float[parameter.ElementCount];
            Backend.Download(parameter, w);
            var delta = adapter.WeightDelta(id);
            if (delta.Length != w.Length)
                throw new MambaFormatException($"LoRA module {id.ModulePath}: its delta has {delta.Length} values, the weight {w.Length}");
            for (int i = 0; i < w.Length; i++) w[i] += sign * delta[i];
            using var updated = Backend.Upload(w, parameter.DType, parameter.Shape);
            Backend.Copy(updated, parameter);
        }
    }

    /// <summary>The base weight a LoRA target adapts.</summary>
    internal static ParameterId BaseParameter(LoraTarget target) => target switch
    {
        LoraTarget.Embeddings => ParameterId.Embeddings,
        LoraTarget.InProj => ParameterId.InProjWeight,
        LoraTarget.XProj => ParameterId.XProjWeight,
        LoraTarget.DtProj => ParameterId.DtProjWeight,
        LoraTarget.OutProj => ParameterId.OutProjWeight,
        _ => throw new ArgumentOutOfRangeException(nameof(target), target, "not a LoRA target"),
    };
}
