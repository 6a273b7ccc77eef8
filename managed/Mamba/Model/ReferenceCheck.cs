using System.Globalization;
using Mamba.IO;

namespace Mamba.Model;

/// <summary>One compared tensor: error figures against the reference and the verdict.</summary>
public sealed record ReferenceRow(string Group, string Name, double MaxAbsError, double RelativeError, double Tolerance, bool Passed, string? Note = null)
{
    /// <summary>False for a tensor this fixture does not define (it is reported, not counted as a pass).</summary>
    public bool Compared { get; init; } = true;

    /// <summary>The row as printed by <c>mamba check-reference</c>.</summary>
    public string Format() => string.Create(CultureInfo.InvariantCulture,
        $"{Name,-34} {MaxAbsError,12:E3} {RelativeError,12:E3} {Tolerance,10:E1}  {(!Compared ? "n/a " : Passed ? "PASS" : "FAIL")}{(Note is null ? "" : "  " + Note)}");
}

/// <summary>
/// Compares a model with a fixture's <c>reference.safetensors</c> (outputs of transformers 5.17) group by
/// group: forward, cache, step, loss, padded, generate, grad. The error of a tensor is
/// max|out − ref| / max|ref|; tolerances are the fixtures README's for the model's precision, and for the CPU's narrow
/// weights (<see cref="CpuWeightFormat"/>) those of <see cref="QuantizedWeightTolerances"/>. A fixture with an
/// <c>adapter/</c> folder (a PEFT LoRA adapter) is checked as base + adapter: forward (the unmerged logits), loss,
/// merged (logits after merging) and grad (every adapter factor's gradient, keyed as in adapter_model.safetensors).
/// </summary>
public static class ReferenceCheck
{
    /// <summary>Every group, in the order they run.</summary>
    public static readonly string[] AllGroups = ["forward", "cache", "step", "loss", "padded", "generate", "grad", "merged"];

    /// <summary>The groups an adapter fixture defines.</summary>
    public static readonly string[] AdapterGroups = ["forward", "loss", "merged", "grad"];

    /// <summary>The default selection: every group.</summary>
    public static readonly string[] DefaultGroups = AllGroups;

    /// <summary>
    /// The relative rounding unit u of one stored weight: int8 per-row, |Δw| ≤ max|row| / 254 (half a step of
    /// max|row| / 127); bf16, |Δw| ≤ 2⁻⁹ |w|; 0 for float32.
    /// </summary>
    public static double WeightRoundingUnit(CpuWeightFormat format) => format switch
    {
        CpuWeightFormat.Int8 => 1.0 / 254,
        CpuWeightFormat.BF16 => 1.0 / 512,
        _ => 0,
    };

    /// <summary>
    /// Tolerances (forward tensors, loss) for the CPU with int8 or bf16 weights and float32 activations: 12·u for the
    /// forward tensors (logits, hidden and cache states) and u / 2 for the loss, u from <see cref="WeightRoundingUnit"/>.
    /// Basis (bench/RESULTS.md, 2026-12-06): over the four fixture models the worst forward error measured was 6.1·u with
    /// int8 (2.4e-2, small-long's ssm state after the step) and 3.1·u with bf16 (6.1e-3, small-long's hidden state 1), the
    /// worst loss error 0.09·u and 0.05·u; the tolerances leave a factor ≈ 2 (int8) and ≈ 4 (bf16) on the forward
    /// tensors and ≥ 5 on the loss. Greedy tokens are judged by the low-precision rule (rounding may flip near-ties).
    /// </summary>
    public static (double Forward, double Loss) QuantizedWeightTolerances(CpuWeightFormat format)
    {
        double u = WeightRoundingUnit(format);
        return (12 * u, u / 2);
    }

    /// <summary>
    /// Runs the selected <paramref name="groups"/> of the fixture in <paramref name="fixtureDir"/> against <paramref name="model"/>.
    /// <paramref name="modelDir"/> (default <c>&lt;fixtureDir&gt;/model</c>) is where the model came from: the low-precision
    /// generate rule reloads it in float32 on the CPU as its judge.
    /// </summary>
    public static IReadOnlyList<ReferenceRow> Run(MambaForCausalLM model, string fixtureDir, IReadOnlyCollection<string> groups, string? modelDir = null)
    {
        modelDir ??= Path.Combine(fixtureDir, "model");
        foreach (var g in groups)
            if (!AllGroups.Contains(g)) throw new ArgumentException($"unknown group '{g}' (expected {string.Join(", ", AllGroups)})", nameof(groups));
        var referencePath = Path.Combine(fixtureDir, "reference.safetensors");
        using var reference = SafeTensorsFile.Open(referencePath);
        bool quantized = model.CpuWeights != CpuWeightFormat.F32;
        bool lowPrecision = model.ActivationDType != DType.F32 || quantized;
        double forwardTol = lowPrecision ? 3e-2 : 1e-4, gradTol = lowPrecision ? 5e-2 : 1e-3, lossTol = lowPrecision ? 1e-2 : 1e-5;
        if (quantized) (forwardTol, lossTol) = QuantizedWeightTolerances(model.CpuWeights);
        var rows = new List<ReferenceRow>();
        var adapterDir = Path.Combine(fixtureDir, "adapter");
        if (Directory.Exists(adapterDir))
        {
            RunAdapter(model, reference, adapterDir, groups, forwardTol, lossTol, gradTol, rows);
            return rows;
        }
        if (groups.Contains("merged"))
            rows.Add(new ReferenceRow("merged", "merged.logits", double.NaN, double.NaN, forwardTol, true, "not an adapter fixture") { Compared = false });
        var config = model.Config;

        int[,] Ids(string name) => ReadIds(reference, name);
        void Compare(string group, string name, HostTensor output, double tolerance) => rows.Add(CompareTensor(reference, group, name, output, tolerance));
        bool Has(string name) => reference.Contains(name);

        var inputIds = Ids("input_ids");
        int batch = inputIds.GetLength(0);
        MambaCache? cache = null;
        try
        {
            if (groups.Contains("forward") || groups.Contains("cache") || groups.Contains("step"))
            {
                cache = model.CreateCache(batch);
                var output = model.Forward(inputIds, new ForwardOptions { Cache = cache, OutputHiddenStates = true });
                if (groups.Contains("forward"))
                {
                    Compare("forward", "logits", output.Logits, forwardTol);
                    for (int i = 0; i < output.HiddenStates!.Count; i++)
                        Compare("forward", $"hidden_states.{i}", output.HiddenStates[i], forwardTol);
                    if (Has($"hidden_states.{output.HiddenStates.Count}"))
                        rows.Add(new ReferenceRow("forward", $"hidden_states.{output.HiddenStates.Count}", double.NaN, double.NaN, forwardTol, false, "the reference has more hidden states than the model returned"));
                    Compare("forward", "last_hidden_state", output.LastHiddenState, forwardTol);
                }
                if (groups.Contains("cache"))
                    for (int l = 0; l < config.NumHiddenLayers; l++)
                    {
                        Compare("cache", $"cache.conv.{l}", cache.GetConvState(l), forwardTol);
                        Compare("cache", $"cache.ssm.{l}", cache.GetSsmState(l), forwardTol);
                    }
                if (groups.Contains("step"))
                {
                    var step = model.Forward(Ids("step.input_ids"), new ForwardOptions { Cache = cache });
                    Compare("step", "step.logits", step.Logits, forwardTol);
                    for (int l = 0; l < config.NumHiddenLayers; l++)
                    {
                        Compare("step", $"step.cache.conv.{l}", cache.GetConvState(l), forwardTol);
                        Compare("step", $"step.cache.ssm.{l}", cache.GetSsmState(l), forwardTol);
                    }
                }
            }
        }
        finally
        {
            cache?.Dispose();
        }
        if (groups.Contains("loss"))
            rows.Add(CompareLoss(reference, model.Forward(inputIds, new ForwardOptions { Labels = Ids("labels") }).Loss!.Value, lossTol));
        if (groups.Contains("padded"))
        {
            if (Has("padded.input_ids"))
            {
                var output = model.Forward(Ids("padded.input_ids"), new ForwardOptions { AttentionMask = Ids("padded.attention_mask") });
                Compare("padded", "padded.logits", output.Logits, forwardTol);
            }
            else rows.Add(new ReferenceRow("padded", "padded.logits", double.NaN, double.NaN, forwardTol, true, "not in this fixture") { Compared = false });
        }
        if (groups.Contains("generate"))
            rows.Add(CheckGenerate(model, reference, Ids("generate.prompt"), Ids("generate.greedy"), lowPrecision, forwardTol, modelDir));
        if (groups.Contains("grad"))
        {
            if (quantized)
                rows.Add(new ReferenceRow("grad", "grad.*", double.NaN, double.NaN, gradTol, true,
                    $"not checked: {model.CpuWeights.ToShortName()} CPU weights serve inference only (train with f32 weights)") { Compared = false });
            else CheckGradients(model, Ids("input_ids"), Ids("labels"), reference, gradTol, rows, Compare);
        }
        return rows;
    }

    /// <summary>Base + the fixture's PEFT adapter: unmerged logits, loss, adapter gradients, then merged logits (the base is restored after).</summary>
    private static void RunAdapter(MambaForCausalLM model, SafeTensorsFile reference, string adapterDir, IReadOnlyCollection<string> groups,
        double forwardTol, double lossTol, double gradTol, List<ReferenceRow> rows)
    {
        // Selected groups that this kind of fixture lacks are listed as not compared.
        foreach (var g in groups.Where(g => !AdapterGroups.Contains(g)))
            rows.Add(new ReferenceRow(g, g, double.NaN, double.NaN, 0, true, "not in an adapter fixture") { Compared = false });
        var adapter = Lora.LoraAdapter.Load(adapterDir);
        var inputIds = ReadIds(reference, "input_ids");
        var labels = ReadIds(reference, "labels");
        using var loaded = model.LoadAdapter(adapter, "reference-check");
        if (groups.Contains("forward"))
            rows.Add(CompareTensor(reference, "forward", "logits", model.Forward(inputIds, new ForwardOptions { Adapter = loaded }).Logits, forwardTol));
        if (groups.Contains("loss"))
            rows.Add(CompareLoss(reference, model.Forward(inputIds, new ForwardOptions { Labels = labels, Adapter = loaded }).Loss!.Value, lossTol));
        if (groups.Contains("grad"))
        {
            loaded.EnableGradients();
            model.ForwardBackward(inputIds, labels, null, CountedScale(labels), recomputeActivations: false, loaded);
            var expected = new HashSet<string>(reference.Tensors.Keys.Where(n => n.StartsWith("grad.", StringComparison.Ordinal)), StringComparer.Ordinal);
            foreach (var (id, m) in loaded.Modules.OrderBy(kv => kv.Key.Layer).ThenBy(kv => kv.Key.Target))
            {
                var down = new float[m.GradDown!.ElementCount];
                var up = new float[m.GradUp!.ElementCount];
                model.Backend.Download(m.GradDown, down);
                model.Backend.Download(m.GradUp, up);
                var peft = m.ToPeft(down, up);
                foreach (var (key, tensor) in new[] { (id.PeftKeyA, peft.A), (id.PeftKeyB, peft.B) })
                {
                    expected.Remove("grad." + key);
                    rows.Add(CompareTensor(reference, "grad", "grad." + key, tensor, gradTol));
                }
            }
            foreach (var name in expected.Order(StringComparer.Ordinal))
                rows.Add(new ReferenceRow("grad", name, double.NaN, double.NaN, gradTol, false, "the adapter has no factor of this name"));
        }
        if (groups.Contains("merged"))
        {
            model.MergeAdapter(adapter);
            try
            {
                rows.Add(CompareTensor(reference, "merged", "merged.logits", model.Forward(inputIds).Logits, forwardTol));
            }
            finally
            {
                model.UnmergeAdapter(adapter);
            }
        }
    }

    private static float CountedScale(int[,] labels)
    {
        int counted = 0;
        for (int b = 0; b < labels.GetLength(0); b++)
            for (int t = 1; t < labels.GetLength(1); t++)
                if (labels[b, t] != -100) counted++;
        return counted == 0 ? 0f : 1f / counted;
    }

    private static int[,] ReadIds(SafeTensorsFile reference, string name)
    {
        var info = reference.GetInfo(name);
        var flat = reference.ReadInt64(name);
        int b = (int)info.Shape[0], l = (int)info.Shape[1];
        var ids = new int[b, l];
        for (int i = 0; i < b; i++)
            for (int j = 0; j < l; j++) ids[i, j] = checked((int)flat[i * l + j]);
        return ids;
    }

    private static ReferenceRow CompareLoss(SafeTensorsFile reference, double got, double tolerance)
    {
        double expected = reference.ReadFloat32("loss")[0];
        double abs = Math.Abs(got - expected);
        double rel = abs / Math.Abs(expected);
        return new ReferenceRow("loss", "loss", abs, rel, tolerance, rel <= tolerance,
            string.Create(CultureInfo.InvariantCulture, $"got {got:G9}, reference {expected:G9}"));
    }

    /// <summary>max|out − ref| / max|ref| of one tensor against the reference's tensor of that name.</summary>
    private static ReferenceRow CompareTensor(SafeTensorsFile reference, string group, string name, HostTensor output, double tolerance)
    {
        if (!reference.Contains(name))
            return new ReferenceRow(group, name, double.NaN, double.NaN, tolerance, false, "absent from the reference file");
        var info = reference.GetInfo(name);
        var expected = reference.ReadFloat32(name);
        if (!info.Shape.Select(x => (int)x).SequenceEqual(output.Shape))
            return new ReferenceRow(group, name, double.NaN, double.NaN, tolerance, false,
                $"shape [{string.Join(", ", output.Shape)}] != reference [{string.Join(", ", info.Shape)}]");
        double maxAbs = 0, maxRef = 0;
        for (long i = 0; i < expected.LongLength; i++)
        {
            double diff = Math.Abs((double)output.Data[i] - expected[i]);
            if (double.IsNaN(diff)) diff = double.PositiveInfinity;
            maxAbs = Math.Max(maxAbs, diff);
            maxRef = Math.Max(maxRef, Math.Abs(expected[i]));
        }
        double rel = maxRef > 0 ? maxAbs / maxRef : maxAbs;
        return new ReferenceRow(group, name, maxAbs, rel, tolerance, rel <= tolerance);
    }

    /// <summary>
    /// d loss / d parameter for the fixture's labels (mean over counted tokens, as transformers' loss), compared with every
    /// <c>grad.{name}</c> of the reference; a parameter the reference lacks, or a reference gradient the model has no
    /// parameter for, fails.
    /// </summary>
    private static void CheckGradients(MambaForCausalLM model, int[,] inputIds, int[,] labels, SafeTensorsFile reference, double tolerance,
        List<ReferenceRow> rows, Action<string, string, HostTensor, double> compare)
    {
        model.ZeroGradients();
        model.ForwardBackward(inputIds, labels, null, CountedScale(labels), recomputeActivations: false);
        var expected = new HashSet<string>(reference.Tensors.Keys.Where(n => n.StartsWith("grad.", StringComparison.Ordinal)), StringComparer.Ordinal);
        foreach (var entry in MambaParameterTable.Entries(model.Config))
        {
            var name = "grad." + entry.Name;
            expected.Remove(name);
            var grad = model.Gradients[entry.Key];
            var data = new float[grad.ElementCount];
            model.Backend.Download(grad, data);
            compare("grad", name, new HostTensor(data, entry.StoredShape.Select(x => (int)x).ToArray()), tolerance);
        }
        foreach (var name in expected.Order(StringComparer.Ordinal))
            rows.Add(new ReferenceRow("grad", name, double.NaN, double.NaN, tolerance, false, "the model has no parameter of this name"));
    }

    private static ReferenceRow CheckGenerate(MambaForCausalLM model, SafeTensorsFile reference, int[,] prompt, int[,] greedy, bool lowPrecision,
        double tolerance, string modelDir)
    {
        int newTokens = greedy.GetLength(1) - prompt.GetLength(1);
        var got = model.GenerateGreedy(prompt, maxNewTokens: Math.Max(newTokens, 0));
        string Text(int[,] a) => string.Join(",", Enumerable.Range(0, a.GetLength(1)).Select(j => a[0, j]));
        if (!lowPrecision)
        {
            bool same = Text(got) == Text(greedy);
            int mismatch = same ? -1 : Enumerable.Range(0, Math.Min(got.GetLength(1), greedy.GetLength(1))).FirstOrDefault(j => got[0, j] != greedy[0, j], Math.Min(got.GetLength(1), greedy.GetLength(1)));
            return new ReferenceRow("generate", "generate.greedy", same ? 0 : 1, same ? 0 : 1, 0, same,
                same ? $"{newTokens} tokens identical" : $"first difference at position {mismatch}: got [{Text(got)}], reference [{Text(greedy)}]");
        }
        // Low precision: along the model's own greedy sequence, each chosen token's float32 logit must be
        // within tolerance·max|logit| of that step's float32 maximum (rounding may flip near-ties).
        using var exact = MambaForCausalLM.FromPretrained(modelDir);
        int p = prompt.GetLength(1), total = got.GetLength(1);
        var sequence = new int[1, total];
        for (int j = 0; j < total; j++) sequence[0, j] = got[0, j];
        var logits = exact.Forward(sequence).Logits;
        double worst = 0;
        for (int j = p; j < total; j++)
        {
            var row = logits.Row(0, j - 1);
            float max = float.NegativeInfinity, maxAbs = 0;
            foreach (var v in row) { max = Math.Max(max, v); maxAbs = Math.Max(maxAbs, Math.Abs(v)); }
            worst = Math.Max(worst, (max - row[got[0, j]]) / maxAbs);
        }
        return new ReferenceRow("generate", "generate.greedy", worst, worst, tolerance, worst <= tolerance,
            $"low-precision rule over {total - p} tokens; exact match with the reference: {Text(got) == Text(greedy)}");
    }
}
