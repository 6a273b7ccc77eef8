using Mamba.Compute;
using Mamba.Lora;

namespace Mamba.Model;

/// <summary>The loss of one training micro-batch: Σ of the per-token cross-entropy and how many tokens were counted.</summary>
internal readonly record struct TrainingStepResult(double LossSum, int Count)
{
    /// <summary>The mean over counted tokens (NaN when none was counted, as transformers reports).</summary>
    public double MeanLoss => Count == 0 ? double.NaN : LossSum / Count;
}

public sealed partial class MambaForCausalLM
{
    private ParameterStore<DeviceTensor>? _gradients;

    /// <summary>The parameters on the backend, in device form (the table's <see cref="ParameterForm"/>).</summary>
    internal ParameterStore<DeviceTensor> Parameters => _parameters;

    /// <summary>
    /// d loss / d parameter for every table entry (F32, device shape; for A_log the gradient of A_log itself), allocated
    /// zero on first use and accumulated by <see cref="ForwardBackward"/> until <see cref="ZeroGradients"/>. A tied lm_head
    /// shares the embedding's entry, so it holds the sum of both uses.
    /// </summary>
    internal ParameterStore<DeviceTensor> Gradients
    {
        get
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _gradients ??= new ParameterStore<DeviceTensor>(Config, entry => Backend.Allocate(DType.F32, entry.DeviceShape));
        }
    }

    /// <summary>Sets every gradient to zero.</summary>
    internal void ZeroGradients()
    {
        foreach (var (_, g) in Gradients.Items) Backend.Zero(g);
    }

    /// <summary>
    /// One training forward and backward: the loss of <paramref name="labels"/> (unshifted, as transformers takes them:
    /// position t predicts labels[t + 1]; −100 is ignored) and gradients += <paramref name="gradientScale"/> · d(Σ loss)/dθ.
    /// Pass 1/(counted tokens of the whole accumulation window) for the mean over tokens. With
    /// <paramref name="recomputeActivations"/> only each block's input is kept from the forward and the block is run
    /// again before its backward (less memory, one more forward); the gradients are the same bits either way.
    /// </summary>
    /// <remarks>
    /// With <paramref name="adapter"/> (loaded on this model, its gradient buffers made by
    /// <see cref="LoadedLoraAdapter.EnableGradients"/>) the base model is frozen: only the adapter's factors get
    /// gradients (the base weight-matrix gradients are not computed at all) and <see cref="Gradients"/> is untouched.
    /// </remarks>
    internal TrainingStepResult ForwardBackward(int[,] inputIds, int[,] labels, int[,]? attentionMask, float gradientScale, bool recomputeActivations,
        LoadedLoraAdapter? adapter = null)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        ArgumentNullException.ThrowIfNull(labels);
        int batch = inputIds.GetLength(0), length = inputIds.GetLength(1);
        if (batch <= 0 || length <= 0) throw new ArgumentException($"input must be non-empty, got [{batch}, {length}]", nameof(inputIds));
        if (labels.GetLength(0) != batch || labels.GetLength(1) != length)
            throw new ArgumentException($"labels are [{labels.GetLength(0)}, {labels.GetLength(1)}], input is [{batch}, {length}]", nameof(labels));
        if (!float.IsFinite(gradientScale)) throw new ArgumentOutOfRangeException(nameof(gradientScale), gradientScale, "must be finite");
        var ids = new int[batch * length];
        Buffer.BlockCopy(inputIds, 0, ids, 0, ids.Length * sizeof(int));
        var targets = new int[batch * length];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < length; t++)
                targets[b * length + t] = t + 1 < length ? labels[b, t + 1] : -100;
        using (DeviceLock()) return RunTrainingStep(batch, length, ids, targets, attentionMask, gradientScale, recomputeActivations, adapter);
    }

    private TrainingStepResult RunTrainingStep(int batch, int length, int[] ids, int[] targets, int[,]? attentionMask, float gradientScale, bool recompute,
        LoadedLoraAdapter? adapter)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var c = Config;
        var be = Backend;
        float eps = (float)c.LayerNormEpsilon;
        int layers = c.NumHiddenLayers;
        var scratch = new Scratch(this, pooled: false);
        try
        {
            var lora = LoraCallFor(adapter, scratch);
            if (adapter is not null && !adapter.HasGradients)
                throw new InvalidOperationException($"adapter '{adapter.Name}' is not set up for training (EnableGradients)");
            // A frozen base (LoRA): no base gradients; the small ones the ops always produce go to sinks.
            var grads = adapter is null ? Gradients : null;
            var frozen = adapter is null ? null : new FrozenGradientSinks(c, (t, shape) => scratch.Rent(t, shape));
            DeviceTensor SmallGrad(ParameterId id) => grads?[id] ?? frozen!.Sink(id);
            // Forward, keeping each block's input (the residual stream after its add) and, without recompute, its activations.
            var h = scratch.Rent(DType.F32, batch, length, c.HiddenSize);
            be.Embedding(_parameters[ParameterId.Embeddings], ids, h);
            var embeddingLora = adapter?.Find(LoraTarget.Embeddings);
            if (embeddingLora is not null) LoraOps.AddEmbedding(be, embeddingLora, ids, h, lora!.Rent);
            var mask = UploadMask(attentionMask, batch, length, scratch);
            var inputs = new DeviceTensor[layers];
            var acts = new BlockActivations[recompute ? 1 : layers];
            var checkpointShape = be.ScanCheckpointShape(batch, length, c.IntermediateSize, c.StateSize);
            for (int i = 0; i < acts.Length; i++)
            {
                acts[i] = BlockActivations.Allocate(c, ActivationDType, batch, length, (t, shape) => scratch.Rent(t, shape));
                if (checkpointShape is not null) acts[i] = acts[i] with { ScanCheckpoints = scratch.Rent(DType.F32, checkpointShape) };
            }
            DeviceTensor? previous = null;
            foreach (var block in _blocks)
            {
                int i = block.Layer;
                // Under recompute the backward reruns this forward, which saves the scan states; none are saved here.
                var act = recompute ? acts[0] with { ScanCheckpoints = null } : acts[i];
                var saved = inputs[i] = scratch.Rent(DType.F32, batch, length, c.HiddenSize);
                block.Forward(be, eps, h, previous, act, BlockMode.Sequence, mask, null, null, () => be.Copy(h, saved), lora: lora);
                previous = act.Output;
            }
            var last = scratch.Rent(DType.F32, batch, length, c.HiddenSize);
            be.AddRmsNorm(h, previous, _parameters[ParameterId.NormF], eps, last); // h is now norm_f's input

            // Loss and lm_head (fused, in row chunks), then norm_f.
            var gradLast = scratch.Rent(DType.F32, batch, length, c.HiddenSize);
            double lossSum = be.LinearCrossEntropyBackward(last, _parameters[ParameterId.LmHead], targets, -100, gradientScale,
                gradLast, grads?[ParameterId.LmHead], out int count);
            var gradResidual = scratch.Rent(DType.F32, batch, length, c.HiddenSize);
            be.Zero(gradResidual);
            be.AddRmsNormBackward(h, _parameters[ParameterId.NormF], eps, gradLast, gradResidual, SmallGrad(ParameterId.NormF));

            // Blocks in reverse; one set of activation gradients serves them all.
            var gradAct = BlockActivations.Allocate(c, ActivationDType, batch, length, (t, shape) => scratch.Rent(t, shape));
            for (int i = layers - 1; i >= 0; i--)
            {
                var block = _blocks[i];
                var act = acts[recompute ? 0 : i];
                if (recompute) block.Forward(be, eps, inputs[i], null, act, BlockMode.Sequence, mask, null, null, withOutput: false, lora: lora);
                block.Backward(be, eps, inputs[i], act, mask, gradResidual, gradAct, grads, frozen, lora);
            }
            if (grads is not null) be.EmbeddingBackward(ids, gradResidual, grads[ParameterId.Embeddings]);
            if (embeddingLora is not null) LoraOps.EmbeddingBackward(be, embeddingLora, ids, gradResidual, lora!.Rent);
            be.Synchronize();
            return new TrainingStepResult(lossSum, count);
        }
        finally
        {
            scratch.Release();
        }
    }

    /// <summary>
    /// The loss of <paramref name="labels"/> (unshifted, −100 ignored) without a backward pass: the blocks run as in
    /// prefill and the lm_head + cross-entropy runs in row chunks, so the [B·L, V] logits never exist at once.
    /// </summary>
    internal TrainingStepResult EvaluationLoss(int[,] inputIds, int[,] labels, LoadedLoraAdapter? adapter = null)
    {
        ArgumentNullException.ThrowIfNull(inputIds);
        ArgumentNullException.ThrowIfNull(labels);
        int batch = inputIds.GetLength(0), length = inputIds.GetLength(1);
        var ids = new int[batch * length];
        Buffer.BlockCopy(inputIds, 0, ids, 0, ids.Length * sizeof(int));
        if (labels.GetLength(0) != batch || labels.GetLength(1) != length)
            throw new ArgumentException($"labels are [{labels.GetLength(0)}, {labels.GetLength(1)}], input is [{batch}, {length}]", nameof(labels));
        using var gate = DeviceLock();
        var scratch = new Scratch(this, pooled: false);
        try
        {
            var last = RunBlocks(batch, length, ids, null, new ForwardOptions { Adapter = adapter }, scratch).Last;
            int rows = batch * length, v = Config.VocabSize, d = Config.HiddenSize;
            int chunk = (int)Math.Clamp((64L << 20) / Math.Max(1, (long)v * sizeof(float)), 1, rows); // ≤ 64 MiB of logits
            var head = _parameters[ParameterId.LmHead];
            double sum = 0;
            int count = 0;
            var targets = new int[rows];
            for (int b = 0; b < batch; b++)
                for (int t = 0; t < length; t++)
                    targets[b * length + t] = t + 1 < length ? labels[b, t + 1] : -100;
            var index = new int[chunk];
            for (int start = 0; start < rows; start += chunk)
            {
                int n = Math.Min(chunk, rows - start);
                for (int j = 0; j < n; j++) index[j] = start + j;
                var source = scratch.Rent(DType.F32, n, d);
                Backend.GatherRows(last, index.AsSpan(0, n), source);
                var rounded = head.DType == DType.F32 ? source : scratch.Rent(head.DType, n, d);
                var logits = scratch.Rent(DType.F32, n, v);
                LmHead(source, rounded, logits);
                sum += Backend.CrossEntropySum(logits, targets.AsSpan(start, n), -100, out int c);
                count += c;
            }
            return new TrainingStepResult(sum, count);
        }
        finally
        {
            scratch.Release();
        }
    }

    IMambaBackend ITrainableModel.Backend => Backend;
    TrainingStepResult ITrainableModel.EvaluationLoss(int[,] inputIds, int[,] labels) => EvaluationLoss(inputIds, labels);

    IReadOnlyList<TrainableTensor> ITrainableModel.TrainableTensors => MambaParameterTable.Entries(Config)
        .Select(e => new TrainableTensor(e.Name, e.StoredShape, _parameters[e.Key], Gradients[e.Key], e.Spec.WeightDecay, e.Spec.Form == ParameterForm.NegExp))
        .ToArray();

    void ITrainableModel.SaveTrained(string directory, IReadOnlyList<float[]> masters, string tokenizerPath) =>
        Training.TrainerCheckpoint.SaveModel(directory, Config, ParameterStoreOf(Config, masters), tokenizerPath);

    /// <summary>Values in table order (as <see cref="ITrainableModel.TrainableTensors"/> lists them) as a store.</summary>
    internal static ParameterStore<float[]> ParameterStoreOf(MambaConfig config, IReadOnlyList<float[]> values)
    {
        var entries = MambaParameterTable.Entries(config).ToArray();
        if (values.Count != entries.Length) throw new ArgumentException($"{values.Count} tensors for {entries.Length} parameters", nameof(values));
        var index = entries.Select((e, i) => (e.Key, i)).ToDictionary(x => x.Key, x => x.i);
        return new ParameterStore<float[]>(config, e => values[index[e.Key]]);
    }

    void ITrainableModel.ZeroGradients() => ZeroGradients();
    TrainingStepResult ITrainableModel.ForwardBackward(int[,] inputIds, int[,] labels, int[,]? attentionMask, float gradientScale, bool recomputeActivations) =>
        ForwardBackward(inputIds, labels, attentionMask, gradientScale, recomputeActivations);

    private void ReleaseGradients()
    {
        if (_gradients is null) return;
        foreach (var (_, g) in _gradients.Items) g.Dispose();
        _gradients = null;
    }
}
