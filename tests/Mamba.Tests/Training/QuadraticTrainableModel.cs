using Mamba.Compute;
using Mamba.Compute.Cpu;
using Mamba.Model;
using Mamba.Training;

namespace Mamba.Tests.Training;

/// <summary>
/// A test stand-in for <c>MambaForCausalLM</c> on the CPU backend: the real parameter table of a tiny config, and an
/// analytic loss per counted target, ½·Σ_j (θ_j − c_j(target, previous token))², whose gradient is exact and cheap.
/// θ for A_log is recovered from the backend's A = −exp(A_log), as the real model's gradient is d/dA_log.
/// </summary>
internal sealed class QuadraticTrainableModel : ITrainableModel, IDisposable
{
    private readonly CpuBackend _backend = new(threads: 1);
    private readonly ParameterEntry[] _entries;
    private ParameterStore<DeviceTensor>? _gradients;

    public QuadraticTrainableModel(MambaWeights weights)
    {
        Config = weights.Config;
        Weights = weights;
        _entries = MambaParameterTable.Entries(Config).ToArray();
        Parameters = new ParameterStore<DeviceTensor>(Config, e => e.Spec.Form == ParameterForm.NegExp
            ? _backend.Upload(weights.Values[e.Key].Select(x => -MathF.Exp(x)).ToArray(), DType.F32, e.DeviceShape)
            : _backend.Upload(weights.Values[e.Key], DType.F32, e.DeviceShape));
    }

    /// <summary>A tiny config (vocab 16, width 4, one layer, state 2).</summary>
    public static MambaConfig TinyConfig { get; } = new() { VocabSize = 16, HiddenSize = 4, NumHiddenLayers = 1, StateSize = 2 };

    public static QuadraticTrainableModel Create(int seed = 1) => new(MambaInitializer.Create(TinyConfig, seed));

    public MambaWeights Weights { get; }

    /// <summary>Gradients are zero (only weight decay moves parameters).</summary>
    public bool ZeroGradient { get; init; }

    /// <summary>Called with the 0-based ForwardBackward call index; true makes that call's loss NaN.</summary>
    public Func<int, bool>? Poison { get; init; }

    public int Calls { get; private set; }

    public MambaConfig Config { get; }

    public IMambaBackend Backend => _backend;

    public DType ActivationDType => DType.F32;

    public ParameterStore<DeviceTensor> Parameters { get; }

    public ParameterStore<DeviceTensor> Gradients => _gradients ??= new ParameterStore<DeviceTensor>(Config, e => _backend.Allocate(DType.F32, e.DeviceShape));

    public IReadOnlyList<TrainableTensor> TrainableTensors => _entries
        .Select(e => new TrainableTensor(e.Name, e.StoredShape, Parameters[e.Key], Gradients[e.Key], e.Spec.WeightDecay, e.Spec.Form == ParameterForm.NegExp))
        .ToArray();

    public void SaveTrained(string directory, IReadOnlyList<float[]> masters, string tokenizerPath) =>
        TrainerCheckpoint.SaveModel(directory, Config, MambaForCausalLM.ParameterStoreOf(Config, masters), tokenizerPath);

    public void ZeroGradients()
    {
        foreach (var e in _entries)
        {
            using var zero = _backend.Allocate(DType.F32, e.DeviceShape);
            _backend.Copy(zero, Gradients[e.Key]);
        }
    }

    /// <summary>The parameters as the master values (A_log, not A), flattened in table order.</summary>
    public float[] Theta()
    {
        var all = new List<float>();
        foreach (var e in _entries)
        {
            var data = new float[e.ElementCount];
            _backend.Download(Parameters[e.Key], data);
            all.AddRange(e.Spec.Form == ParameterForm.NegExp ? data.Select(a => MathF.Log(-a)) : data);
        }
        return all.ToArray();
    }

    public float[] Parameter(ParameterKey key, bool master = true)
    {
        var e = _entries.Single(x => x.Key == key);
        var data = new float[e.ElementCount];
        _backend.Download(Parameters[key], data);
        return master && e.Spec.Form == ParameterForm.NegExp ? data.Select(a => MathF.Log(-a)).ToArray() : data;
    }

    public TrainingStepResult ForwardBackward(int[,] inputIds, int[,] labels, int[,]? attentionMask, float gradientScale, bool recomputeActivations)
    {
        int call = Calls++;
        var grad = new double[Theta().Length];
        var (loss, count) = Loss(inputIds, labels, grad);
        if (Poison?.Invoke(call) == true) loss = double.NaN;
        int offset = 0;
        foreach (var e in _entries)
        {
            var g = new float[e.ElementCount];
            _backend.Download(Gradients[e.Key], g);
            for (int i = 0; i < g.Length; i++) g[i] += ZeroGradient ? 0f : (float)(gradientScale * grad[offset + i]);
            offset += g.Length;
            using var staged = _backend.Upload(g, DType.F32, e.DeviceShape);
            _backend.Copy(staged, Gradients[e.Key]);
        }
        return new TrainingStepResult(loss, count);
    }

    public TrainingStepResult EvaluationLoss(int[,] inputIds, int[,] labels)
    {
        var (loss, count) = Loss(inputIds, labels, null);
        return new TrainingStepResult(loss, count);
    }

    /// <summary>The analytic loss and counted targets; adds d loss / d θ to <paramref name="grad"/> when given.</summary>
    private (double Loss, int Count) Loss(int[,] inputIds, int[,] labels, double[]? grad)
    {
        var theta = Theta();
        double loss = 0;
        int count = 0;
        for (int b = 0; b < labels.GetLength(0); b++)
            for (int t = 1; t < labels.GetLength(1); t++)
            {
                int target = labels[b, t];
                if (target == -100) continue;
                int previous = inputIds[b, t - 1];
                count++;
                for (int j = 0; j < theta.Length; j++)
                {
                    double diff = theta[j] - 0.05 * ((target * 7 + j * 3 + previous) % 11 - 5);
                    loss += 0.5 * diff * diff / theta.Length;
                    if (grad is not null) grad[j] += diff / theta.Length;
                }
            }
        return (loss, count);
    }

    public void Dispose()
    {
        foreach (var (_, t) in Parameters.Items) t.Dispose();
        if (_gradients is not null) foreach (var (_, t) in _gradients.Items) t.Dispose();
        _backend.Dispose();
    }
}

/// <summary>An <see cref="IProgress{T}"/> that runs its handler on the reporting thread (Progress&lt;T&gt; posts asynchronously).</summary>
internal sealed class SyncProgress<T>(Action<T> handler) : IProgress<T>
{
    public void Report(T value) => handler(value);
}
