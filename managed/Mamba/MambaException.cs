namespace Mamba;

/// <summary>Base class of every error this library raises for a failed model operation.</summary>
public class MambaException : Exception
{
    /// <summary>Creates an exception with a message.</summary>
    public MambaException(string message) : base(message) { }

    /// <summary>Creates an exception with a message and the error that caused it.</summary>
    public MambaException(string message, Exception? inner) : base(message, inner) { }
}

/// <summary>
/// A file (config.json, safetensors, pytorch_model.bin, tokenizer.json, ...) is malformed, truncated,
/// hostile or inconsistent with the model configuration. <see cref="FilePath"/> and, where one is
/// involved, <see cref="EntryName"/> (a tensor or a config key) say where.
/// </summary>
public class MambaFormatException : MambaException
{
    /// <summary>The file that was being read, when known.</summary>
    public string? FilePath { get; }

    /// <summary>The tensor name or configuration key the problem concerns, when known.</summary>
    public string? EntryName { get; }

    /// <summary>Creates a format error for a file and, optionally, the tensor or key inside it.</summary>
    public MambaFormatException(string message, string? filePath = null, string? entryName = null, Exception? inner = null)
        : base(Compose(message, filePath, entryName), inner)
    {
        FilePath = filePath;
        EntryName = entryName;
    }

    private static string Compose(string message, string? filePath, string? entryName)
    {
        var where = (filePath, entryName) switch
        {
            (null, null) => "",
            (not null, null) => $" [file '{filePath}']",
            (null, not null) => $" ['{entryName}']",
            _ => $" [file '{filePath}', '{entryName}']",
        };
        return message + where;
    }
}

/// <summary>A configuration value is missing, unknown, of the wrong type or inconsistent; <see cref="Key"/> names it.</summary>
public sealed class MambaConfigException : MambaFormatException
{
    /// <summary>The configuration key at fault.</summary>
    public string Key { get; }

    /// <summary>Creates a configuration error naming <paramref name="key"/>.</summary>
    public MambaConfigException(string key, string message, string? filePath = null, Exception? inner = null)
        : base($"config key '{key}': {message}", filePath, key, inner)
    {
        Key = key;
    }
}

/// <summary>
/// The model produced scores from which no token can be chosen: every logit of a row is NaN (greedy), or every one
/// is NaN or −∞ (sampling). The weights, their dtype or the activations have overflowed; the message says which
/// choice failed. Loading already refuses weights holding NaN or ±∞, so this points at an overflow during the
/// forward pass (e.g. float16 activations, or weights scaled far beyond a trained model's).
/// </summary>
public sealed class MambaNumericalException : MambaException
{
    /// <summary>Creates a numerical error with a message.</summary>
    public MambaNumericalException(string message) : base(message) { }
}
