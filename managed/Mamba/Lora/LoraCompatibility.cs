namespace Mamba.Lora;

/// <summary>
/// What the Python stack does with an adapter's target modules on Mamba: peft 0.21 refuses <c>out_proj</c> and
/// <c>conv1d</c> as LoRA targets ("incompatible modules"), and transformers 5.17's training forward reads
/// <c>dt_proj.weight</c> directly, so a LoRA on <c>dt_proj</c> gets no gradient and changes nothing there.
/// </summary>
public static class LoraCompatibility
{
    private static readonly string[] PeftRefused = ["out_proj", "conv1d"];
    private static readonly string[] TransformersIgnored = ["dt_proj"];

    /// <summary>
    /// The entries of <see cref="LoraConfig.TargetModules"/> that the Python stack cannot use as this library does:
    /// those PEFT 0.21 refuses to load on Mamba (<c>out_proj</c>, <c>conv1d</c>) and those transformers 5.17's training
    /// forward ignores (<c>dt_proj</c>). An entry counts when its last dotted component is one of these names
    /// (so both "out_proj" and "backbone.layers.0.mixer.out_proj" are listed). Order follows the configuration.
    /// </summary>
    public static IReadOnlyList<string> PeftIncompatibleModules(LoraConfig config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return config.TargetModules.Where(t => Reason(t) is not null).ToArray();
    }

    /// <summary>
    /// Why <paramref name="targetModule"/> (a <c>target_modules</c> entry) does not work in peft 0.21 / transformers 5.17
    /// on Mamba, for a warning; null when it does.
    /// </summary>
    public static string? Reason(string targetModule)
    {
        ArgumentNullException.ThrowIfNull(targetModule);
        string last = targetModule[(targetModule.LastIndexOf('.') + 1)..];
        if (PeftRefused.Contains(last))
            return $"{targetModule}: peft 0.21 refuses '{last}' as a LoRA target on Mamba (\"incompatible modules\"), so PEFT cannot load this adapter";
        if (TransformersIgnored.Contains(last))
            return $"{targetModule}: transformers 5.17's Mamba training forward reads dt_proj.weight directly, so a LoRA on '{last}' has no effect there";
        return null;
    }
}
