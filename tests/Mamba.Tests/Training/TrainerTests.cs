using System.Text.Json.Nodes;
using Mamba.Model;
using Mamba.Training;

namespace Mamba.Tests.Training;

/// <summary>The training loop on an analytic stand-in model: learning, accumulation, skipping, decay masks, cancellation and exact resume.</summary>
public class TrainerTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("mamba-trainer-").FullName;

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    internal static string Tokenizer => TestFixtures.Tokenizer("tokenizer.json");

    internal static string WriteCorpus(string dir, int paragraphs = 40)
    {
        var path = Path.Combine(dir, "corpus.txt");
        var words = new[] { "the", "state", "space", "model", "reads", "a", "long", "sequence", "and", "keeps", "what", "matters" };
        var rng = new Random(7);
        using var writer = new StreamWriter(path);
        for (int p = 0; p < paragraphs; p++)
        {
            writer.WriteLine(string.Join(' ', Enumerable.Range(0, 12).Select(_ => words[rng.Next(words.Length)])) + ".");
            writer.WriteLine();
        }
        return path;
    }

    private TrainingOptions Options(string output, string data) => new()
    {
        OutputDir = output,
        DataFiles = [data],
        MaxLength = 8,
        PerDeviceTrainBatchSize = 2,
        PerDeviceEvalBatchSize = 3,
        GradientAccumulationSteps = 2,
        MaxSteps = 12,
        LearningRate = 0.05,
        WarmupSteps = 2,
        LrSchedulerType = LearningRateSchedulerType.Cosine,
        WeightDecay = 0.1,
        MaxGradNorm = 0.05,
        LoggingSteps = 2,
        EvalSteps = 4,
        SaveSteps = 4,
        ValidationSplit = 0.1,
        Seed = 3,
    };

    private static (List<TrainingProgress> Reports, TrainingProgress Last) Run(QuadraticTrainableModel model, TrainingOptions options,
        Action<TrainingProgress, CancellationTokenSource>? onStep = null)
    {
        var reports = new List<TrainingProgress>();
        using var cts = new CancellationTokenSource();
        using var trainer = new MambaTrainer(model, model.Weights, Tokenizer, options, null, new ManagedOptimizerOps(model.Backend));
        var last = trainer.Train(new SyncProgress<TrainingProgress>(p => { reports.Add(p); onStep?.Invoke(p, cts); }), cts.Token);
        return (reports, last);
    }

    [Test]
    public void TrainingLowersTheLossAndWritesMetricsAndTheFinalModel()
    {
        var data = WriteCorpus(_dir);
        var output = Path.Combine(_dir, "out");
        using var model = QuadraticTrainableModel.Create();
        var (reports, last) = Run(model, Options(output, data) with { MaxGradNorm = 1.0, WeightDecay = 0 });

        Assert.That(reports.Select(r => r.Step), Is.EqualTo(Enumerable.Range(1, 12)));
        Assert.That(reports[^1].Loss, Is.LessThan(reports[1].Loss * 0.9), "loss went down");
        Assert.That(reports[0].LearningRate, Is.Zero, "warm-up starts at 0 (transformers' schedule)");
        Assert.That(last.EvalLoss, Is.Not.Null);
        var records = File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!.AsObject()).ToArray();
        Assert.That(records.Select(r => (int)r["step"]!), Is.EqualTo(new[] { 2, 4, 6, 8, 10, 12 }));
        foreach (var key in new[] { "loss", "learning_rate", "grad_norm", "tokens_per_second", "epoch" })
            Assert.That(records.All(r => r.ContainsKey(key)), key);
        Assert.That(records.Where(r => r.ContainsKey("eval_loss")).Select(r => (int)r["step"]!), Is.EqualTo(new[] { 4, 8, 12 }));
        Assert.That(records.Where(r => r.ContainsKey("eval_perplexity")).Count(), Is.EqualTo(3));

        foreach (var file in new[] { "config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "trainer_state.json" })
            Assert.That(File.Exists(Path.Combine(output, file)), file);
        Assert.That(Directory.Exists(Path.Combine(output, "checkpoint-4")) && Directory.Exists(Path.Combine(output, "checkpoint-8")));
        var saved = CheckpointLoader.LoadWeights(output);
        Assert.That(saved[ParameterId.ALog, 0], Is.EqualTo(model.Parameter(new ParameterKey(ParameterId.ALog, 0))).Within(1e-6));
        Assert.That(saved[ParameterId.InProjWeight, 0], Is.EqualTo(model.Parameter(new ParameterKey(ParameterId.InProjWeight, 0))));
    }

    [Test]
    public void AResumedRunGivesTheBitIdenticalLossCurve()
    {
        var data = WriteCorpus(_dir);
        using var straight = QuadraticTrainableModel.Create();
        var (full, _) = Run(straight, Options(Path.Combine(_dir, "a"), data));

        var output = Path.Combine(_dir, "b");
        using var first = QuadraticTrainableModel.Create();
        var cancelled = Assert.Throws<OperationCanceledException>(() => RunCollecting(first, Options(output, data), cancelAfter: 6));
        Assert.That(cancelled!.Message, Does.Contain("checkpoint-6"));
        Assert.That(Directory.Exists(Path.Combine(output, "checkpoint-6")), "cancelling saved a checkpoint");

        using var second = QuadraticTrainableModel.Create(seed: 99); // other initial weights: the checkpoint must replace them
        var (after, _) = Run(second, Options(output, data) with { ResumeFromCheckpoint = Path.Combine(output, "checkpoint-6") });

        var resumed = _collected.Concat(after).ToArray();
        Assert.That(resumed.Select(r => r.Step), Is.EqualTo(full.Select(r => r.Step)));
        Assert.That(resumed.Select(r => BitConverter.DoubleToInt64Bits(r.Loss)), Is.EqualTo(full.Select(r => BitConverter.DoubleToInt64Bits(r.Loss))));
        Assert.That(resumed.Select(r => r.EvalLoss), Is.EqualTo(full.Select(r => r.EvalLoss)));
        Assert.That(second.Theta(), Is.EqualTo(straight.Theta()));
        var metrics = File.ReadAllLines(Path.Combine(output, "metrics.jsonl"));
        Assert.That(metrics.Select(StripSpeed), Is.EqualTo(File.ReadAllLines(Path.Combine(_dir, "a", "metrics.jsonl")).Select(StripSpeed)));
    }

    private List<TrainingProgress> _collected = [];

    private void RunCollecting(QuadraticTrainableModel model, TrainingOptions options, int cancelAfter)
    {
        _collected = [];
        Run(model, options, (p, cts) =>
        {
            _collected.Add(p);
            if (p.Step == cancelAfter) cts.Cancel();
        });
    }

    private static string StripSpeed(string line)
    {
        var node = JsonNode.Parse(line)!.AsObject();
        node.Remove("tokens_per_second");
        return node.ToJsonString();
    }

    [Test]
    public void ANonFiniteLossSkipsTheUpdateAndIsReported()
    {
        var data = WriteCorpus(_dir);
        var output = Path.Combine(_dir, "out");
        // Calls 4 and 5 are step 3's two micro-batches (no evaluation in this run).
        using var model = new QuadraticTrainableModel(MambaInitializer.Create(QuadraticTrainableModel.TinyConfig, 1)) { Poison = call => call == 4 };
        float[]? beforeSkip = null, afterSkip = null;
        var reports = new List<TrainingProgress>();
        using (var trainer = new MambaTrainer(model, model.Weights, Tokenizer, Options(output, data) with { EvalSteps = 0, ValidationSplit = 0, MaxSteps = 5 },
            null, new ManagedOptimizerOps(model.Backend)))
            trainer.Train(new SyncProgress<TrainingProgress>(p =>
            {
                reports.Add(p);
                if (p.Step == 2) beforeSkip = model.Theta();
                if (p.Step == 3) afterSkip = model.Theta();
            }));
        Assert.That(reports[2].Skipped, Is.True);
        Assert.That(double.IsNaN(reports[2].Loss));
        Assert.That(reports[2].SkippedSteps, Is.EqualTo(1));
        Assert.That(reports.Count(r => r.Skipped), Is.EqualTo(1));
        Assert.That(afterSkip, Is.EqualTo(beforeSkip), "a skipped step leaves the parameters alone");
        Assert.That(reports[3].Loss, Is.Not.NaN);
        var skippedRecord = File.ReadAllLines(Path.Combine(output, "metrics.jsonl")).Select(l => JsonNode.Parse(l)!.AsObject()).Single(r => r.ContainsKey("skipped"));
        Assert.That((int)skippedRecord["step"]!, Is.EqualTo(3));
    }

    [Test]
    public void WeightDecayAppliesOnlyToTheEntriesTheTableMarks()
    {
        var data = WriteCorpus(_dir);
        using var model = new QuadraticTrainableModel(MambaInitializer.Create(QuadraticTrainableModel.TinyConfig, 1)) { ZeroGradient = true };
        var before = MambaParameterTable.Entries(model.Config).ToDictionary(e => e.Key, e => model.Parameter(e.Key));
        Run(model, Options(Path.Combine(_dir, "out"), data) with { MaxSteps = 1, WarmupSteps = 0, LrSchedulerType = LearningRateSchedulerType.Constant, WeightDecay = 0.5, LearningRate = 0.1, EvalSteps = 0 });
        foreach (var e in MambaParameterTable.Entries(model.Config))
        {
            var after = model.Parameter(e.Key);
            if (e.Spec.WeightDecay)
                Assert.That(after, Is.EqualTo(before[e.Key].Select(x => x * (1f - 0.1f * 0.5f)).ToArray()).Within(1e-6), e.Name);
            else
                Assert.That(after, Is.EqualTo(before[e.Key]).Within(1e-6), e.Name);
        }
    }

    [Test]
    public void AccumulationMatchesOneLargerBatch()
    {
        var data = WriteCorpus(_dir);
        using var accumulated = QuadraticTrainableModel.Create();
        using var single = QuadraticTrainableModel.Create();
        var baseOptions = Options(Path.Combine(_dir, "a"), data) with { EvalSteps = 0, MaxSteps = 4 };
        var (a, _) = Run(accumulated, baseOptions with { PerDeviceTrainBatchSize = 2, GradientAccumulationSteps = 2 });
        var (b, _) = Run(single, baseOptions with { OutputDir = Path.Combine(_dir, "b"), PerDeviceTrainBatchSize = 4, GradientAccumulationSteps = 1 });
        Assert.That(a.Select(r => r.Loss), Is.EqualTo(b.Select(r => r.Loss)).Within(1e-9));
        Assert.That(a.Select(r => r.GradNorm), Is.EqualTo(b.Select(r => r.GradNorm)).Within(1e-6));
        Assert.That(accumulated.Theta(), Is.EqualTo(single.Theta()).Within(1e-6));
    }

    [Test]
    public void ClippingBoundsTheUpdateOfTheFirstStep()
    {
        // With clipping the first AdamW step is still ±lr per element (Adam normalises); the report keeps the unclipped norm.
        var data = WriteCorpus(_dir);
        using var model = QuadraticTrainableModel.Create();
        var (reports, _) = Run(model, Options(Path.Combine(_dir, "out"), data) with { MaxSteps = 1, WarmupSteps = 0, WeightDecay = 0, EvalSteps = 0, MaxGradNorm = 1e-3 });
        Assert.That(reports[0].GradNorm, Is.GreaterThan(1e-3));
    }

    [Test]
    public void AdamWFollowsTorchForOneElement()
    {
        using var backend = new Mamba.Compute.Cpu.CpuBackend(threads: 1);
        var ops = new ManagedOptimizerOps(backend);
        using var master = backend.Upload([1f, -2f], DType.F32, 2);
        using var grad = backend.Upload([0.5f, 4f], DType.F32, 2);
        using var m = backend.Allocate(DType.F32, 2);
        using var v = backend.Allocate(DType.F32, 2);
        using var parameter = backend.Allocate(DType.F32, 2);
        ops.AdamWStep(master, grad, m, v, parameter, negExp: true, new Mamba.Compute.AdamWStepArgs(0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 0.1f, 0.001f, 0.5f));
        var w = new float[2];
        backend.Download(master, w);
        // torch: g = 0.25 → m = 0.025, v = 6.25e-5; w = 1·(1 − 0.001) − 0.1 · (0.025/0.1) / (sqrt(6.25e-5/0.001) + 1e-8) = 0.999 − 0.1
        Assert.That(w[0], Is.EqualTo(0.899f).Within(1e-6));
        Assert.That(w[1], Is.EqualTo(-2f * 0.999f - 0.1f).Within(1e-6));
        Assert.That(ops.SumOfSquares(grad), Is.EqualTo(16.25));
        var a = new float[2];
        backend.Download(parameter, a);
        Assert.That(a[0], Is.EqualTo(-MathF.Exp(w[0])));
    }

    [TestCase(LearningRateSchedulerType.Linear, 0, 0.0)]
    [TestCase(LearningRateSchedulerType.Linear, 5, 0.5)]
    [TestCase(LearningRateSchedulerType.Linear, 10, 1.0)]
    [TestCase(LearningRateSchedulerType.Linear, 55, 0.5)]
    [TestCase(LearningRateSchedulerType.Linear, 100, 0.0)]
    [TestCase(LearningRateSchedulerType.Cosine, 10, 1.0)]
    [TestCase(LearningRateSchedulerType.Cosine, 55, 0.5)]
    [TestCase(LearningRateSchedulerType.Cosine, 100, 0.0)]
    [TestCase(LearningRateSchedulerType.Constant, 3, 0.3)]
    [TestCase(LearningRateSchedulerType.Constant, 90, 1.0)]
    public void SchedulesFollowTransformers(LearningRateSchedulerType type, int step, double expected) =>
        Assert.That(LearningRateSchedule.At(type, 1.0, step, warmup: 10, total: 100), Is.EqualTo(expected).Within(1e-12));

    [Test]
    public void TheDataOrderIsSeededAndChangesPerEpoch()
    {
        var a = DataOrder.Permutation(50, 1, 0);
        Assert.That(a, Is.EqualTo(DataOrder.Permutation(50, 1, 0)));
        Assert.That(a, Is.Not.EqualTo(DataOrder.Permutation(50, 1, 1)));
        Assert.That(a, Is.Not.EqualTo(DataOrder.Permutation(50, 2, 0)));
        Assert.That(a.Order(), Is.EqualTo(Enumerable.Range(0, 50)));
    }

    [Test]
    public void InvalidOptionsNameTheValue()
    {
        var good = new TrainingOptions { OutputDir = "o", DataFiles = ["d"] };
        Assert.DoesNotThrow(good.Validate);
        Assert.That(() => (good with { GradientAccumulationSteps = 0 }).Validate(), Throws.ArgumentException.With.Message.Contains("GradientAccumulationSteps"));
        Assert.That(() => (good with { MaxLength = 1 }).Validate(), Throws.ArgumentException.With.Message.Contains("MaxLength"));
        Assert.That(() => (good with { ValidationSplit = 1 }).Validate(), Throws.ArgumentException.With.Message.Contains("ValidationSplit"));
        Assert.That(() => (good with { DataFiles = [] }).Validate(), Throws.ArgumentException.With.Message.Contains("DataFiles"));
    }
}
