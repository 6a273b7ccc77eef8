namespace Mamba.Lora;

/// <summary>The modules of a Mamba (v1) model a LoRA adapter can attach to.</summary>
public enum LoraTarget
{
    /// <summary><c>backbone.embeddings</c> (an <c>nn.Embedding</c>; PEFT keys <c>lora_embedding_A</c>/<c>lora_embedding_B</c>).</summary>
    Embeddings,
    /// <summary><c>backbone.layers.{i}.mixer.in_proj</c>: hidden → 2·intermediate.</summary>
    InProj,
    /// <summary><c>backbone.layers.{i}.mixer.x_proj</c>: intermediate → dt_rank + 2·state.</summary>
    XProj,
    /// <summary><c>backbone.layers.{i}.mixer.dt_proj</c>: dt_rank → intermediate.</summary>
    DtProj,
    /// <summary><c>backbone.layers.{i}.mixer.out_proj</c>: intermediate → hidden.</summary>
    OutProj,
}
