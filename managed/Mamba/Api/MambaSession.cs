using Mamba.Model;

namespace Mamba;

/// <summary>A saved <see cref="MambaSession"/>: the recurrent states, the tokens seen and the last logits.</summary>
public sealed record MambaSessionState(MambaCacheSnapshot Cache, IReadOnlyList<int> Tokens, float[]? Logits);

/// <summary>
/// One sequence's recurrent state over a shared <see cref="MambaModel"/>. <see cref="Append(IReadOnlyList{int})"/> feeds tokens
/// (the first call is the prefill; later calls continue exactly from the state); <see cref="Logits"/> are the
/// next-token logits. A session is not thread-safe; use one per conversation or thread.
/// </summary>
public sealed class MambaSession : IDisposable
{
    private readonly MambaModel _model;
    private readonly MambaCache _cache;
    private readonly List<int> _tokens = [];
    private float[]? _logits;
    private bool _disposed;

    internal MambaSession(MambaModel model)
    {
        _model = model;
        _cache = model.Network.CreateCache(1);
    }

    /// <summary>Every token fed so far.</summary>
    public IReadOnlyList<int> Tokens => _tokens;

    /// <summary>The float32 logits [V] for the token after <see cref="Tokens"/>; null before the first <see cref="Append(IReadOnlyList{int})"/>.</summary>
    public ReadOnlySpan<float> Logits => _logits;

    /// <summary>Feeds tokens: a prefill on an empty session, an exact continuation afterwards. Returns the new logits.</summary>
    /// <remarks>
    /// When the call fails (e.g. <see cref="Native.MambaOutOfMemoryException"/>), <see cref="Tokens"/> and
    /// <see cref="Logits"/> stay as they were. A failed first append leaves the session empty; a later one that failed after
    /// it began advancing the state leaves it lost: Append, SaveState and Fork then throw <see cref="InvalidOperationException"/>
    /// until <see cref="Reset"/> or <see cref="RestoreState"/> (e.g. to a state saved before the call).
    /// </remarks>
    public ReadOnlySpan<float> Append(IReadOnlyList<int> ids)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(ids);
        if (ids.Count == 0) throw new ArgumentException("append at least one token", nameof(ids));
        var batch = new int[1, ids.Count];
        for (int t = 0; t < ids.Count; t++) batch[0, t] = ids[t];
        var output = _model.Network.Forward(batch, new ForwardOptions { Cache = _cache, LogitsToKeep = 1 });
        _tokens.AddRange(ids);
        _logits = output.Logits.Row(0, 0).ToArray();
        return _logits;
    }

    /// <summary>Tokenizes <paramref name="text"/> with the model's tokenizer and appends it.</summary>
    public ReadOnlySpan<float> Append(string text) => Append(_model.Encode(text));

    /// <summary>A copy of the state that <see cref="RestoreState"/> can return to (also in another session of the same model).</summary>
    public MambaSessionState SaveState()
    {
        ThrowIfDisposed();
        return new MambaSessionState(_cache.Snapshot(), _tokens.ToArray(), _logits?.ToArray());
    }

    /// <summary>Returns to a saved state.</summary>
    public void RestoreState(MambaSessionState state)
    {
        ThrowIfDisposed();
        ArgumentNullException.ThrowIfNull(state);
        _cache.Restore(state.Cache);
        _tokens.Clear();
        _tokens.AddRange(state.Tokens);
        _logits = state.Logits?.ToArray();
    }

    /// <summary>A new session starting from this one's current state; the two then evolve independently.</summary>
    public MambaSession Fork()
    {
        var state = SaveState();
        var fork = _model.CreateSession();
        try
        {
            fork.RestoreState(state);
        }
        catch
        {
            fork.Dispose();
            throw;
        }
        return fork;
    }

    /// <summary>Forgets every token: back to an empty state.</summary>
    public void Reset()
    {
        ThrowIfDisposed();
        _cache.Reset();
        _tokens.Clear();
        _logits = null;
    }

    private void ThrowIfDisposed()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _model.ThrowIfDisposed();
    }

    /// <summary>Frees the state.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _cache.Dispose();
    }
}
