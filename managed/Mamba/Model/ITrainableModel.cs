using Mamba.Compute;

namespace Mamba.Model;

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

    /// <summary>The parameters in device form (Matrix in the activation dtype, Vector F32, NegExp holds A = −exp(A_log)).</summary>
    ParameterStore<DeviceTensor> Parameters { get; }

    /// <summary>F32 gradients in device shape (d loss / d A_log for A_log), allocated on first use.</summary>
    ParameterStore<DeviceTensor> Gradients { get; }

    /// <summary>Sets every gradient to zero.</summary>
    void ZeroGradients();

    /// <summary>
    /// Runs the model on <paramref name="inputIds"/> [B, L] and adds <paramref name="gradientScale"/> · d(LossSum)/dθ to
    /// <see cref="Gradients"/>. <paramref name="labels"/> are unshifted (position t predicts labels[t + 1]; −100 is ignored).
    /// </summary>
    TrainingStepResult ForwardBackward(int[,] inputIds, int[,] labels, int[,]? attentionMask, float gradientScale, bool recomputeActivations);

    /// <summary>
    /// The loss of <paramref name="labels"/> (unshifted, −100 ignored) without a backward pass or any gradient change:
    /// Σ of the per-token cross-entropy and the number of counted tokens (evaluation).
    /// </summary>
    TrainingStepResult EvaluationLoss(int[,] inputIds, int[,] labels);
}
