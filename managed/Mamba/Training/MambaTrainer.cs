using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Mamba.Compute;
using Mamba.Model;
using Mamba.Tokenization;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Mamba.Training;

/// <summary>
/// Trains a <see cref="MambaForCausalLM"/> on text files: AdamW with decoupled weight decay (none on A_log, D, norm
/// weights and biases) on float32 master weights, linear/cosine/constant schedules with warm-up, global-norm
/// clipping, gradient accumulation, optional activation recompute, a seeded data order, evaluation on a held-out
/// split, checkpoints that resume exactly, and <c>metrics.jsonl</c>. A step whose loss or gradient is not finite
/// applies no update and is reported (progress, log and metrics).
/// </summary>
/// <remarks>
/// Output layout: <c>&lt;output&gt;/checkpoint-&lt;step&gt;/</c> every <see cref="TrainingOptions.SaveSteps"/> and on
/// cancellation; the final model in <c>&lt;output&gt;/</c>; <c>&lt;output&gt;/metrics.jsonl</c> one JSON object per
/// logged step; the token cache in <c>&lt;output&gt;/data-cache/</c>.
/// </remarks>
public sealed class MambaTrainer : IDisposable
{
    private readonly ITrainableModel _model;
    private readonly IOptimizerOps _ops;
    private readonly TrainingOptions _options;
    private readonly ILogger _log;
    private readonly string _tokenizerPath;
    private readonly MambaTokenizer _tokenizer;
    private readonly TrainableTensor[] _tensors;
    private readonly DeviceTensor[] _master;
    private readonly DeviceTensor[] _m;
    private readonly DeviceTensor[] _v;
    private bool _disposed;

    /// <summary>
    /// A trainer for <paramref name="model"/>, whose float32 values are <paramref name="initialWeights"/> (the master
    /// weights start from them), with the tokenizer at <paramref name="tokenizerPath"/> (tokenizer.json).
    /// </summary>
    /// <exception cref="ArgumentException">An option is invalid (see <see cref="TrainingOptions.Validate"/>).</exception>
    /// <exception cref="NotSupportedException">The model's backend cannot train.</exception>
    public MambaTrainer(MambaForCausalLM model, MambaWeights initialWeights, string tokenizerPath, TrainingOptions options, ILogger? logger = null)
        : this(AsTrainable(model), initialWeights, tokenizerPath, options, logger, null)
    {
    }

    /// <summary>
    /// A trainer for the LoRA adapter <paramref name="adapter"/> (loaded on <paramref name="model"/>): the base model is
    /// frozen, only the adapter's factors have gradients, master weights and moments, and the output folders hold the
    /// adapter in PEFT's format (<c>adapter_config.json</c>, <c>adapter_model.safetensors</c>).
    /// </summary>
    /// <remarks><paramref name="initial"/>: the adapter's F32 starting values (required when the model computes in a
    /// 16-bit dtype, where the loaded copy is rounded); by default they are read from the loaded adapter.</remarks>
    /// <exception cref="ArgumentException">An option is invalid, or the adapter belongs to another model.</exception>
    public MambaTrainer(MambaForCausalLM model, Lora.LoadedLoraAdapter adapter, string tokenizerPath, TrainingOptions options, ILogger? logger = null,
        Lora.LoraAdapter? initial = null)
        : this(new LoraTrainingModel(AsTrainableModel(model), adapter, initial), tokenizerPath, options, logger)
    {
    }

    private MambaTrainer(LoraTrainingModel lora, string tokenizerPath, TrainingOptions options, ILogger? logger)
        : this(lora, lora.InitialValues, tokenizerPath, options, logger, null)
    {
    }

    internal MambaTrainer(ITrainableModel model, MambaWeights initialWeights, string tokenizerPath, TrainingOptions options, ILogger? logger, IOptimizerOps? ops)
        : this(model, InitialValues(model, initialWeights), tokenizerPath, options, logger, ops)
    {
    }

    /// <summary>
    /// The general form: <paramref name="initialValues"/> are the F32 master values in <see cref="ITrainableModel.TrainableTensors"/> order.
    /// </summary>
    internal MambaTrainer(ITrainableModel model, IReadOnlyList<float[]> initialValues, string tokenizerPath, TrainingOptions options, ILogger? logger, IOptimizerOps? ops)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrEmpty(tokenizerPath);
        options.Validate();
        if (options.Bf16 && model.ActivationDType != DType.BF16)
            throw new ArgumentException($"bf16 training needs a model with bf16 activations; this one computes in {model.ActivationDType.ToShortName()}", nameof(options));
        if (!File.Exists(tokenizerPath)) throw new FileNotFoundException($"tokenizer not found: {tokenizerPath}", tokenizerPath);
        _model = model;
        _options = options;
        _log = logger ?? NullLogger.Instance;
        _ops = ops ?? new BackendOptimizerOps(model.Backend);
        _tokenizerPath = tokenizerPath;
        _tokenizer = MambaTokenizer.FromFile(tokenizerPath);
        _tensors = model.TrainableTensors.ToArray();
        var backend = model.Backend;
        ArgumentNullException.ThrowIfNull(initialValues);
        if (initialValues.Count != _tensors.Length)
            throw new ArgumentException($"{initialValues.Count} initial tensors for {_tensors.Length} trainable ones", nameof(initialValues));
        for (int i = 0; i < _tensors.Length; i++)
            if (initialValues[i].LongLength != _tensors[i].ElementCount)
                throw new ArgumentException($"the initial {_tensors[i].Name} has {initialValues[i].LongLength} values, the model {_tensors[i].ElementCount}", nameof(initialValues));
        _master = _tensors.Select((t, i) => backend.Upload(initialValues[i], DType.F32, t.Parameter.Shape)).ToArray();
        _m = _tensors.Select(t => backend.Allocate(DType.F32, t.Parameter.Shape)).ToArray();
        _v = _tensors.Select(t => backend.Allocate(DType.F32, t.Parameter.Shape)).ToArray();
        foreach (var t in _m.Concat(_v)) backend.Zero(t);
    }

    /// <summary>The full model's initial values in table order, checked against the table.</summary>
    private static float[][] InitialValues(ITrainableModel model, MambaWeights initialWeights)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(initialWeights);
        return MambaParameterTable.Entries(model.Config).Select(e =>
        {
            var values = initialWeights.Values.TryGet(e.Key)
                ?? throw new ArgumentException($"the initial weights have no {e.Name}", nameof(initialWeights));
            if (values.LongLength != e.ElementCount)
                throw new ArgumentException($"the initial weights' {e.Name} has {values.LongLength} values, the model {e.ElementCount}", nameof(initialWeights));
            return values;
        }).ToArray();
    }

    private static MambaForCausalLM AsTrainableModel(MambaForCausalLM model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model;
    }

    private static ITrainableModel AsTrainable(MambaForCausalLM model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return model;
    }

    /// <summary>The options of the run.</summary>
    public TrainingOptions Options => _options;

    /// <summary>Runs <see cref="Train"/> on a worker thread.</summary>
    public Task<TrainingProgress> TrainAsync(IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default) =>
        Task.Run(() => Train(progress, cancellationToken), CancellationToken.None);

    /// <summary>
    /// Trains to the last step (or resumes from <see cref="TrainingOptions.ResumeFromCheckpoint"/> first), saves the
    /// final model in the output folder and returns the last step's progress. Cancelling saves a checkpoint of the
    /// steps done and then throws <see cref="OperationCanceledException"/>.
    /// </summary>
    /// <exception cref="MambaFormatException">The data or a checkpoint is unusable (the message says where).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (after the checkpoint is written).</exception>
    public TrainingProgress Train(IProgress<TrainingProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var o = _options;
        Directory.CreateDirectory(o.OutputDir);
        bool separateEval = o.EvalDataFiles.Count > 0;
        using var data = TokenDataset.Build(o.DataFiles, o.TextField, _tokenizer, _tokenizerPath, _model.Config.EosTokenId,
            o.MaxLength, separateEval ? 0 : o.ValidationSplit, Path.Combine(o.OutputDir, "data-cache"), cancellationToken);
        using var evalData = separateEval
            ? TokenDataset.Build(o.EvalDataFiles, o.TextField, _tokenizer, _tokenizerPath, _model.Config.EosTokenId,
                o.MaxLength, 0, Path.Combine(o.OutputDir, "data-cache", "eval"), cancellationToken)
            : null;
        var (evalSet, evalSequences) = evalData is null ? (data, data.ValidationSequences) : (evalData, evalData.TrainSequences);
        int perStep = o.PerDeviceTrainBatchSize * o.GradientAccumulationSteps;
        int trainCount = data.TrainSequences.Count;
        int totalSteps = o.MaxSteps > 0 ? o.MaxSteps : Math.Max(1, (int)Math.Ceiling(o.NumTrainEpochs * trainCount / perStep));
        if (o.EvalSteps > 0 && evalSequences.Count == 0)
            throw new MambaFormatException($"eval_steps is {o.EvalSteps} but the validation split holds no sequence ({data.TokenCount} tokens, {data.TokenCount / o.MaxLength} sequences of {o.MaxLength}, validation_split {o.ValidationSplit})",
                string.Join(", ", o.DataFiles));
        _log.LogInformation("data: {Tokens} tokens, {Train} training and {Validation} validation sequences of {Length}; {Steps} steps of {PerStep} sequences",
            data.TokenCount, trainCount, evalSequences.Count, o.MaxLength, totalSteps, perStep);

        var state = new TrainerState { MaxSteps = totalSteps, Seed = o.Seed, TrainSequences = trainCount };
        if (o.ResumeFromCheckpoint is { } resume) state = Resume(resume, state);
        var metricsPath = Path.Combine(o.OutputDir, "metrics.jsonl");
        File.WriteAllLines(metricsPath, state.LogHistory.Select(r => r.ToJsonString()));

        if (o.EvalOnStart && state.GlobalStep == 0 && evalSequences.Count > 0)
        {
            double startLoss = Evaluate(evalSet, evalSequences);
            var record = new JsonObject { ["step"] = 0, ["epoch"] = 0.0, ["eval_loss"] = Finite(startLoss), ["eval_perplexity"] = Finite(Math.Exp(startLoss)) };
            state.LogHistory.Add(record);
            File.AppendAllText(metricsPath, record.ToJsonString() + "\n");
            _log.LogInformation("step 0: eval loss {EvalLoss:F4}, perplexity {Perplexity:F2}", startLoss, Math.Exp(startLoss));
        }
        int[] order = DataOrder.Permutation(trainCount, o.Seed, state.DataEpoch);
        var clock = Stopwatch.StartNew();
        long tokensThisRun = 0;
        int stepsThisRun = 0;
        TrainingProgress? last = null;
        int lastSaved = o.ResumeFromCheckpoint is null ? -1 : state.GlobalStep;
        while (state.GlobalStep < totalSteps)
        {
            if (cancellationToken.IsCancellationRequested)
            {
                var path = state.GlobalStep != lastSaved ? SaveCheckpoint(state) : null;
                _log.LogWarning("training cancelled at step {Step}; checkpoint: {Path}", state.GlobalStep, path ?? "already saved");
                throw new OperationCanceledException($"training cancelled at step {state.GlobalStep}" + (path is null ? "" : $"; checkpoint saved to {path}"), cancellationToken);
            }
            int step = state.GlobalStep;
            double lr = LearningRateSchedule.At(o.LrSchedulerType, o.LearningRate, step, o.WarmupSteps, totalSteps);

            var batches = new int[o.GradientAccumulationSteps][,];
            for (int a = 0; a < batches.Length; a++)
            {
                var indices = new int[o.PerDeviceTrainBatchSize];
                for (int b = 0; b < indices.Length; b++)
                {
                    if (state.DataPosition == trainCount)
                    {
                        state.DataEpoch++;
                        state.DataPosition = 0;
                        order = DataOrder.Permutation(trainCount, o.Seed, state.DataEpoch);
                    }
                    indices[b] = data.TrainSequences[order[state.DataPosition++]];
                }
                batches[a] = data.ReadBatch(indices);
            }
            long counted = batches.Sum(CountTargets);
            _model.ZeroGradients();
            double lossSum = 0;
            foreach (var batch in batches)
                lossSum += _model.ForwardBackward(batch, batch, null, (float)(1.0 / counted), o.GradientCheckpointing).LossSum;
            double loss = lossSum / counted;
            double sumSquares = 0;
            foreach (var t in _tensors) sumSquares += _ops.SumOfSquares(t.Gradient);
            double gradNorm = Math.Sqrt(sumSquares);
            bool skipped = !double.IsFinite(loss) || !double.IsFinite(gradNorm);
            if (skipped)
            {
                state.SkippedSteps++;
                _log.LogWarning("step {Step}: non-finite {What} (loss {Loss}, grad norm {Norm}); the update is skipped",
                    step + 1, double.IsFinite(loss) ? "gradient" : "loss", loss, gradNorm);
            }
            else
            {
                ApplyUpdate(state, lr, gradNorm);
                state.LossSinceLog += loss;
                state.StepsSinceLog++;
            }
            state.GlobalStep++;
            state.SequencesSeen += perStep;
            state.TokensSeen += (long)perStep * o.MaxLength;
            tokensThisRun += (long)perStep * o.MaxLength;
            stepsThisRun++;

            bool final = state.GlobalStep == totalSteps;
            double? evalLoss = null;
            if (evalSequences.Count > 0 && ((o.EvalSteps > 0 && state.GlobalStep % o.EvalSteps == 0) || final))
            {
                evalLoss = Evaluate(evalSet, evalSequences);
                state.LastEvalLoss = evalLoss;
                _log.LogInformation("step {Step}: eval loss {EvalLoss:F4}, perplexity {Perplexity:F2}", state.GlobalStep, evalLoss, Math.Exp(evalLoss.Value));
            }
            double seconds = Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
            var report = new TrainingProgress
            {
                Step = state.GlobalStep,
                TotalSteps = totalSteps,
                Epoch = (double)state.SequencesSeen / trainCount,
                Loss = loss,
                LearningRate = lr,
                GradNorm = gradNorm,
                TokensPerSecond = tokensThisRun / seconds,
                EstimatedRemaining = TimeSpan.FromSeconds(seconds / stepsThisRun * (totalSteps - state.GlobalStep)),
                EvalLoss = evalLoss,
                Skipped = skipped,
                SkippedSteps = state.SkippedSteps,
            };
            if (skipped || evalLoss is not null || final || state.GlobalStep % o.LoggingSteps == 0)
                Record(state, report, metricsPath);
            if (o.SaveSteps > 0 && state.GlobalStep % o.SaveSteps == 0 && !final)
            {
                report = report with { CheckpointPath = SaveCheckpoint(state) };
                lastSaved = state.GlobalStep;
            }
            last = report;
            progress?.Report(report);
        }
        if (last is null)
            _log.LogInformation("the checkpoint is already at step {Step} of {Total}; nothing to train", state.GlobalStep, totalSteps);
        SaveFinal(state);
        return last ?? new TrainingProgress
        {
            Step = state.GlobalStep, TotalSteps = totalSteps, Epoch = (double)state.SequencesSeen / trainCount, Loss = double.NaN,
            LearningRate = 0, GradNorm = double.NaN, TokensPerSecond = 0, EstimatedRemaining = TimeSpan.Zero,
            EvalLoss = state.LastEvalLoss, SkippedSteps = state.SkippedSteps,
        };
    }

    /// <summary>Targets the model counts in a batch whose labels are its ids: positions 1..L−1 not −100.</summary>
    private static long CountTargets(int[,] labels)
    {
        long n = 0;
        for (int b = 0; b < labels.GetLength(0); b++)
            for (int t = 1; t < labels.GetLength(1); t++)
                if (labels[b, t] != -100) n++;
        return n;
    }

    private void ApplyUpdate(TrainerState state, double lr, double gradNorm)
    {
        var o = _options;
        float clip = o.MaxGradNorm > 0 && gradNorm > o.MaxGradNorm ? (float)(o.MaxGradNorm / (gradNorm + 1e-6)) : 1f;
        state.OptimizerSteps++;
        int t = state.OptimizerSteps;
        for (int i = 0; i < _tensors.Length; i++)
        {
            var tensor = _tensors[i];
            var args = new AdamWStepArgs(
                LearningRate: (float)lr, Beta1: (float)o.AdamBeta1, Beta2: (float)o.AdamBeta2, Epsilon: (float)o.AdamEpsilon,
                WeightDecay: tensor.WeightDecay ? (float)o.WeightDecay : 0f,
                BiasCorrection1: (float)(1 - Math.Pow(o.AdamBeta1, t)), BiasCorrection2: (float)(1 - Math.Pow(o.AdamBeta2, t)),
                GradientScale: clip);
            _ops.AdamWStep(_master[i], tensor.Gradient, _m[i], _v[i], tensor.Parameter, tensor.NegExp, args);
        }
    }

    /// <summary>Mean loss over the counted targets of the validation split (the gradients it leaves are discarded).</summary>
    private double Evaluate(TokenDataset data, IReadOnlyList<int> validation)
    {
        double lossSum = 0;
        long counted = 0;
        for (int start = 0; start < validation.Count; start += _options.PerDeviceEvalBatchSize)
        {
            var batch = data.ReadBatch(validation.Skip(start).Take(_options.PerDeviceEvalBatchSize).ToArray());
            lossSum += _model.EvaluationLoss(batch, batch).LossSum;
            counted += CountTargets(batch);
        }
        _model.ZeroGradients();
        return lossSum / counted;
    }


    private void Record(TrainerState state, TrainingProgress report, string metricsPath)
    {
        var record = new JsonObject
        {
            ["step"] = report.Step,
            ["epoch"] = Math.Round(report.Epoch, 4),
            ["loss"] = state.StepsSinceLog > 0 ? Finite(state.LossSinceLog / state.StepsSinceLog) : Finite(report.Loss),
            ["learning_rate"] = report.LearningRate,
            ["grad_norm"] = Finite(report.GradNorm),
            ["tokens_per_second"] = Math.Round(report.TokensPerSecond, 1),
        };
        if (report.EvalLoss is { } evalLoss)
        {
            record["eval_loss"] = Finite(evalLoss);
            record["eval_perplexity"] = Finite(Math.Exp(evalLoss));
        }
        if (report.Skipped)
        {
            record["skipped"] = true;
            record["step_loss"] = report.Loss.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        }
        state.LossSinceLog = 0;
        state.StepsSinceLog = 0;
        state.LogHistory.Add(record);
        File.AppendAllText(metricsPath, record.ToJsonString() + "\n");
        _log.LogInformation("step {Step}/{Total}: loss {Loss}, lr {LearningRate:G4}, grad norm {GradNorm:G4}, {TokensPerSecond:F0} tokens/s",
            report.Step, report.TotalSteps, record["loss"]?.ToJsonString(), report.LearningRate, report.GradNorm, report.TokensPerSecond);
    }

    /// <summary>JSON has no NaN or ∞: those become null.</summary>
    private static JsonNode? Finite(double value) => double.IsFinite(value) ? JsonValue.Create(value) : null;

    private float[][] Download(DeviceTensor[] tensors) => tensors.Select(t =>
    {
        var data = new float[t.ElementCount];
        _model.Backend.Download(t, data);
        return data;
    }).ToArray();

    private string SaveCheckpoint(TrainerState state)
    {
        var dir = Path.Combine(_options.OutputDir, TrainerCheckpoint.FolderName(state.GlobalStep));
        var masters = Download(_master);
        _model.SaveTrained(dir, masters, _tokenizerPath);
        TrainerCheckpoint.SaveOptimizer(Path.Combine(dir, TrainerCheckpoint.OptimizerFile), _tensors, masters, Download(_m), Download(_v));
        state.Save(Path.Combine(dir, TrainerCheckpoint.StateFile));
        _log.LogInformation("saved {Path}", dir);
        return dir;
    }

    private void SaveFinal(TrainerState state)
    {
        _model.SaveTrained(_options.OutputDir, Download(_master), _tokenizerPath);
        state.Save(Path.Combine(_options.OutputDir, TrainerCheckpoint.StateFile));
        _log.LogInformation("saved the final model to {Path}", _options.OutputDir);
    }

    private TrainerState Resume(string dir, TrainerState fresh)
    {
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"checkpoint folder not found: {dir}");
        var state = TrainerState.Load(Path.Combine(dir, TrainerCheckpoint.StateFile));
        if (state.TrainSequences != fresh.TrainSequences)
            throw new MambaFormatException($"the checkpoint was trained on {state.TrainSequences} training sequences, this data gives {fresh.TrainSequences}: resume with the same data, max_length and validation split", dir);
        if (state.Seed != fresh.Seed)
            _log.LogWarning("resuming with seed {Seed}; the checkpoint used {Old}: the data order from here on differs", fresh.Seed, state.Seed);
        if (state.MaxSteps != fresh.MaxSteps)
            _log.LogWarning("the checkpoint's run had {Old} steps, this one {New}: the learning-rate schedule changes", state.MaxSteps, fresh.MaxSteps);
        state.Seed = fresh.Seed;
        state.MaxSteps = fresh.MaxSteps;
        var (masters, m, v) = TrainerCheckpoint.LoadOptimizer(Path.Combine(dir, TrainerCheckpoint.OptimizerFile), _tensors);
        var backend = _model.Backend;
        for (int i = 0; i < _tensors.Length; i++)
        {
            Overwrite(_master[i], masters[i]);
            Overwrite(_m[i], m[i]);
            Overwrite(_v[i], v[i]);
            Overwrite(_tensors[i].Parameter, _tensors[i].NegExp ? masters[i].Select(x => -MathF.Exp(x)).ToArray() : masters[i]);
        }
        _log.LogInformation("resumed from {Path} at step {Step} (epoch {Epoch}, position {Position})", dir, state.GlobalStep, state.DataEpoch, state.DataPosition);
        return state;

        void Overwrite(DeviceTensor destination, float[] values)
        {
            using var staged = backend.Upload(values, destination.DType, destination.Shape);
            backend.Copy(staged, destination);
        }
    }

    /// <summary>Frees the optimizer state (the model stays with its owner).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var tensor in _master.Concat(_m).Concat(_v)) tensor.Dispose();
    }
}
