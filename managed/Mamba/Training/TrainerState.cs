using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;

namespace Mamba.Training;

/// <summary>
/// Everything besides tensors that a resumed run needs to continue exactly: step counters, the data position (epoch
/// and sequences consumed in it; with the seed this is the whole RNG state), the logging window and the metric
/// history. Saved as <c>trainer_state.json</c> in each checkpoint.
/// </summary>
internal sealed class TrainerState
{
    /// <summary>Optimizer steps done, skipped ones included.</summary>
    public int GlobalStep { get; set; }

    /// <summary>AdamW updates applied (bias correction counts these).</summary>
    public int OptimizerSteps { get; set; }

    /// <summary>Steps the run takes.</summary>
    public int MaxSteps { get; set; }

    /// <summary>Seed of the data order.</summary>
    public int Seed { get; set; }

    /// <summary>The current epoch (0-based); the permutation is drawn from (seed, epoch).</summary>
    public int DataEpoch { get; set; }

    /// <summary>Sequences of the current epoch's permutation already consumed.</summary>
    public int DataPosition { get; set; }

    /// <summary>Training sequences per epoch (checked on resume).</summary>
    public int TrainSequences { get; set; }

    /// <summary>Sequences consumed in total.</summary>
    public long SequencesSeen { get; set; }

    /// <summary>Training tokens consumed in total.</summary>
    public long TokensSeen { get; set; }

    /// <summary>Steps skipped for a non-finite loss or gradient.</summary>
    public int SkippedSteps { get; set; }

    /// <summary>Sum of the losses of the steps since the last metric record.</summary>
    public double LossSinceLog { get; set; }

    /// <summary>Finite-loss steps since the last metric record.</summary>
    public int StepsSinceLog { get; set; }

    /// <summary>Last validation loss, when one was computed.</summary>
    public double? LastEvalLoss { get; set; }

    /// <summary>Every metric record so far (as in metrics.jsonl; transformers' log_history).</summary>
    public List<JsonObject> LogHistory { get; set; } = [];

    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>Writes the state as JSON.</summary>
    public void Save(string path) => File.WriteAllText(path, JsonSerializer.Serialize(this, Json) + "\n");

    /// <summary>Reads a state written by <see cref="Save"/>.</summary>
    public static TrainerState Load(string path)
    {
        try
        {
            return JsonSerializer.Deserialize<TrainerState>(IO.JsonFile.ReadBounded(path, 256L << 20, "trainer_state.json") /* its log history grows with the run */, Json)
                ?? throw new MambaFormatException("empty trainer state", path);
        }
        catch (JsonException e)
        {
            throw new MambaFormatException($"not a trainer state: {e.Message}", path, inner: e);
        }
    }
}
