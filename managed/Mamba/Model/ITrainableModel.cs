using Mamba.Compute;

namespace Mamba.Model;

/// <summary>
/// One tensor the optimizer updates: its checkpoint name and shape, the model's copy (<paramref name="Parameter"/>, in
/// device form), its F32 gradient, whether AdamW decays it, and whether the model holds −exp(master) (A from A_log).
/// </summary>
internal sealed record TrainableTensor(string Name, long[] SavedShape, DeviceTensor Parameter, DeviceTensor Gradient, bool WeightDecay, bool NegExp)
{
    /// <summary>Values in the tensor.</summary>
    public long ElementCount => Parameter.ElementCount;
}

/// <summary>
/// What <see cref="Training.MambaTrainer"/> needs of a model: its parameters and gradients on its backend and one fused
/// forward + backward. <c>MambaForCausalLM</c> implements it; tests use small analytic models.
/// </summary>
internal interface ITrainableModel
{
    /// <summary>The configuration (the parameter table is built from it).</summary>
    MambaConfig Config { get; }

    /// <summary>The backend holding parameters and gradients.</summary>
    IMambaBackend Backend { get; }

    /// <summary>The dtype of <see cref="ParameterForm.Matrix"/> parameters and of activations.</summary>
    DType ActivationDType { get; }

    /// <summary>
    /// What the optimizer updates, in a fixed order: each tensor in device form (a weight matrix in the activation dtype,
    /// a vector F32, A = −exp(A_log) for A_log) with its F32 gradient (d loss / d A_log for A_log), allocated on first use.
    /// </summary>
    IReadOnlyList<TrainableTensor> TrainableTensors { get; }

    /// <summary>Sets every gradient to zero.</summary>
    void ZeroGradients();

    /// <summary>Writes what was trained, from the F32 master values (in <see cref="TrainableTensors"/> order), into <paramref name="directory"/>.</summary>
    void SaveTrained(string directory, IReadOnlyList<float[]> masters, string tokenizerPath);

    /// <summary>
    /// Runs the model on <paramref name="inputIds"/> [B, L] and adds <paramref name="gradientScale"/> · d(LossSum)/dθ to
    /// the gradients of <see cref="TrainableTensors"/>. <paramref name="labels"/> are unshifted (position t predicts labels[t + 1]; −100 is ignored).
    /// </summary>
    TrainingStepResult ForwardBackward(int[,] inputIds, int[,] labels, int[,]? attentionMask, float gradientScale, bool recomputeActivations);

    /// <summary>
    /// The loss of <paramref name="labels"/> (unshifted, −100 ignored) without a backward pass or any gradient change:
    /// Σ of the per-token cross-entropy and the number of counted tokens (evaluation).
    /// </summary>
    TrainingStepResult EvaluationLoss(int[,] inputIds, int[,] labels);
}
