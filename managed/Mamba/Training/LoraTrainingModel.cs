using Mamba.Compute;
using Mamba.Lora;
using Mamba.Model;

namespace Mamba.Training;

/// <summary>
/// A model with a LoRA adapter as the trainer sees it: the base model frozen, the adapter's factors (A and B of every
/// module) the only trainable tensors, and the output an adapter folder in PEFT's format.
/// </summary>
internal sealed class LoraTrainingModel : ITrainableModel
{
    private readonly MambaForCausalLM _model;
    private readonly LoadedLoraAdapter _adapter;
    private readonly TrainableTensor[] _tensors;
    private readonly LoraModuleOnDevice[] _modules;

    /// <summary>
    /// A trainable view of <paramref name="adapter"/>. The F32 starting values are <paramref name="initial"/> (the adapter
    /// as built on the host, before its upload rounded it to a 16-bit activation dtype) or, without it, read back from
    /// the device (exact only on an F32 model).
    /// </summary>
    public LoraTrainingModel(MambaForCausalLM model, LoadedLoraAdapter adapter, LoraAdapter? initial = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(adapter);
        if (!model.Adapters.Contains(adapter)) throw new ArgumentException($"adapter '{adapter.Name}' is not loaded on this model", nameof(adapter));
        if (adapter.Config.LoraDropout > 0)
            throw new MambaConfigException("lora_dropout", $"is {adapter.Config.LoraDropout}; training with LoRA dropout is not supported (use 0, PEFT's default)");
        if (initial is null && model.ActivationDType != DType.F32)
            throw new ArgumentException("on a 16-bit model pass the adapter's F32 starting values (the device copy is rounded)", nameof(initial));
        _model = model;
        _adapter = adapter;
        adapter.EnableGradients();
        _modules = adapter.ModuleIds.Select(id => adapter.Modules[id]).ToArray();
        // Names as in adapter_model.safetensors; shapes as held on the device (A of the embedding and dt_proj transposed).
        _tensors = _modules.SelectMany(m => new[]
        {
            new TrainableTensor(m.Id.PeftKeyA, m.Down.Shape.Select(x => (long)x).ToArray(), m.Down, m.GradDown!, WeightDecay: true, NegExp: false),
            new TrainableTensor(m.Id.PeftKeyB, m.Up.Shape.Select(x => (long)x).ToArray(), m.Up, m.GradUp!, WeightDecay: true, NegExp: false),
        }).ToArray();
        InitialValues = initial is not null
            ? _modules.SelectMany(m => new[] { LoraModuleOnDevice.DeviceDown(m.Id, initial.Modules[m.Id].A).Data, initial.Modules[m.Id].B.Data }).ToArray()
            : _tensors.Select(t =>
            {
                var data = new float[t.ElementCount];
                model.Backend.Download(t.Parameter, data);
                return data;
            }).ToArray();
    }

    /// <summary>The factors' F32 starting values in <see cref="TrainableTensors"/> order.</summary>
    public IReadOnlyList<float[]> InitialValues { get; }

    public MambaConfig Config => _model.Config;

    public IMambaBackend Backend => _model.Backend;

    public DType ActivationDType => _model.ActivationDType;

    public IReadOnlyList<TrainableTensor> TrainableTensors => _tensors;

    public void ZeroGradients() => _adapter.ZeroGradients();

    public TrainingStepResult ForwardBackward(int[,] inputIds, int[,] labels, int[,]? attentionMask, float gradientScale, bool recomputeActivations) =>
        _model.ForwardBackward(inputIds, labels, attentionMask, gradientScale, recomputeActivations, _adapter);

    public TrainingStepResult EvaluationLoss(int[,] inputIds, int[,] labels) => _model.EvaluationLoss(inputIds, labels, _adapter);

    /// <summary>Writes the adapter (PEFT's files) from the master values.</summary>
    public void SaveTrained(string directory, IReadOnlyList<float[]> masters, string tokenizerPath)
    {
        var modules = new Dictionary<LoraModuleId, LoraModuleWeights>();
        for (int i = 0; i < _modules.Length; i++)
            modules[_modules[i].Id] = _modules[i].ToPeft(masters[2 * i], masters[2 * i + 1]);
        new LoraAdapter(_adapter.Config, modules).Save(directory);
    }
}
