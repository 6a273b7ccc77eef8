namespace Mamba;

/// <summary>Why generation stopped.</summary>
public enum FinishReason
{
    /// <summary>The token limit (max new tokens) was reached.</summary>
    Length,
    /// <summary>An end-of-sequence token was produced (it is part of <see cref="GenerationResult.OutputIds"/>, not of the text).</summary>
    EndOfSequence,
    /// <summary>A stop sequence appeared in the text (the text ends before it).</summary>
    StopSequence,
}

/// <summary>Token counts of one generation.</summary>
public sealed record GenerationUsage(int PromptTokens, int GeneratedTokens)
{
    /// <summary>Prompt plus generated tokens.</summary>
    public int TotalTokens => PromptTokens + GeneratedTokens;
}

/// <summary>The outcome of generating from one prompt.</summary>
public sealed record GenerationResult
{
    /// <summary>The generated text (special tokens and any stop sequence excluded).</summary>
    public required string Text { get; init; }

    /// <summary>The prompt's token ids.</summary>
    public required IReadOnlyList<int> PromptIds { get; init; }

    /// <summary>The generated token ids (an end-of-sequence id included when it ended the row).</summary>
    public required IReadOnlyList<int> OutputIds { get; init; }

    /// <summary>Why generation stopped.</summary>
    public required FinishReason FinishReason { get; init; }

    /// <summary>Token counts.</summary>
    public required GenerationUsage Usage { get; init; }

    /// <summary>Time of the prompt's forward pass (shared by a batch).</summary>
    public TimeSpan PrefillTime { get; init; }

    /// <summary>Time of the decode steps that produced this row's tokens (shared by a batch).</summary>
    public TimeSpan DecodeTime { get; init; }

    /// <summary>Generated tokens per second of decode time.</summary>
    public double DecodeTokensPerSecond => DecodeTime > TimeSpan.Zero ? Usage.GeneratedTokens / DecodeTime.TotalSeconds : 0;
}
