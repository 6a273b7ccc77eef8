namespace Mamba.Lora;

/// <summary>
/// The two low-rank factors of one adapted module, float32 and row-major, with PEFT's shapes:
/// for a linear layer A is [r, in] and B is [out, r]; for the embedding A is [r, vocab] and B is [hidden, r]
/// (PEFT's <c>lora_embedding_A</c>/<c>lora_embedding_B</c>).
/// </summary>
/// <param name="A">The down projection, [r, in].</param>
/// <param name="B">The up projection, [out, r].</param>
public sealed record LoraModuleWeights(HostTensor A, HostTensor B)
{
    /// <summary>The rank r (rows of A).</summary>
    public int Rank => A.Shape[0];

    /// <summary>Input features of a linear module; the vocabulary size for the embedding (columns of A).</summary>
    public int InFeatures => A.Shape[1];

    /// <summary>Output features of a linear module; the hidden size for the embedding (rows of B).</summary>
    public int OutFeatures => B.Shape[0];
}
