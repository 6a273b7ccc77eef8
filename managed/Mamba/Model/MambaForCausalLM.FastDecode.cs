namespace Mamba.Model;

public sealed partial class MambaForCausalLM
{
    /// <summary>
    /// A backend-specific greedy decode step (one token per row on a filled cache, argmax into
    /// <paramref name="result"/>), e.g. a captured CUDA graph. Returns false when none applies, and the
    /// generic op-by-op path runs instead; both must give the same tokens.
    /// </summary>
    private bool TryFastDecode(int[] ids, MambaCache cache, int[] result) => false;
}
