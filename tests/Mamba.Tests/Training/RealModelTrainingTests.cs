using Mamba.Model;
using Mamba.Training;

namespace Mamba.Tests.Training;

/// <summary>The trainer on the real model (CPU backend, real backward and backend AdamW), not the analytic stand-in.</summary>
public class RealModelTrainingTests
{
    private string _dir = "";

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("mamba-real-train-").FullName;

    [TearDown]
    public void TearDown()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (IOException) { }
    }

    private static MambaWeights Weights() => MambaInitializer.Create(MambaConfig.Preset("130m") with { HiddenSize = 16, NumHiddenLayers = 2, StateSize = 4 }, seed: 4);

    private TrainingOptions Options(string output, string data) => new()
    {
        OutputDir = output,
        DataFiles = [data],
        MaxLength = 12,
        PerDeviceTrainBatchSize = 2,
        PerDeviceEvalBatchSize = 2,
        GradientAccumulationSteps = 2,
        MaxSteps = 8,
        LearningRate = 3e-3,
        WarmupSteps = 2,
        LrSchedulerType = LearningRateSchedulerType.Cosine,
        WeightDecay = 0.1,
        MaxGradNorm = 1.0,
        LoggingSteps = 1,
        EvalSteps = 4,
        SaveSteps = 4,
        ValidationSplit = 0.1,
        Seed = 5,
    };

    private static List<TrainingProgress> Run(MambaWeights weights, TrainingOptions options, int cancelAfter = 0)
    {
        var reports = new List<TrainingProgress>();
        using var model = new MambaForCausalLM(weights);
        using var cts = new CancellationTokenSource();
        using var trainer = new MambaTrainer(model, weights, TrainerTests.Tokenizer, options);
        try
        {
            trainer.Train(new SyncProgress<TrainingProgress>(p =>
            {
                reports.Add(p);
                if (p.Step == cancelAfter) cts.Cancel();
            }), cts.Token);
        }
        catch (OperationCanceledException) when (cancelAfter > 0) { }
        return reports;
    }

    [Test]
    public void AResumedRunOfTheRealModelGivesTheBitIdenticalLossCurve()
    {
        var data = TrainerTests.WriteCorpus(_dir, paragraphs: 60);
        var full = Run(Weights(), Options(Path.Combine(_dir, "a"), data));
        Assert.That(full.Select(r => r.Step), Is.EqualTo(Enumerable.Range(1, 8)));
        Assert.That(full[^1].Loss, Is.LessThan(full[0].Loss), "the loss went down");

        var output = Path.Combine(_dir, "b");
        var first = Run(Weights(), Options(output, data), cancelAfter: 4);
        Assert.That(Directory.Exists(Path.Combine(output, "checkpoint-4")));
        var otherStart = MambaInitializer.Create(Weights().Config, seed: 77); // the checkpoint must replace these weights
        var after = Run(otherStart, Options(output, data) with { ResumeFromCheckpoint = Path.Combine(output, "checkpoint-4") });

        var resumed = first.Concat(after).ToArray();
        Assert.That(resumed.Select(r => r.Step), Is.EqualTo(full.Select(r => r.Step)));
        Assert.That(resumed.Select(r => BitConverter.DoubleToInt64Bits(r.Loss)), Is.EqualTo(full.Select(r => BitConverter.DoubleToInt64Bits(r.Loss))));
        Assert.That(resumed.Select(r => r.EvalLoss), Is.EqualTo(full.Select(r => r.EvalLoss)));
        var a = CheckpointLoader.LoadWeights(Path.Combine(_dir, "a"));
        var b = CheckpointLoader.LoadWeights(output);
        foreach (var entry in MambaParameterTable.Entries(a.Config))
            Assert.That(b.Values[entry.Key], Is.EqualTo(a.Values[entry.Key]), entry.Name);
    }

    [TestCase("tiny")]
    [TestCase("tiny-untied-bias")]
    public void TheEvaluationLossIsTheReferenceLossWithoutTouchingGradients(string name)
    {
        var fixture = TestFixtures.Model(name);
        using var model = MambaForCausalLM.FromPretrained(Path.Combine(fixture, "model"));
        using var reference = Mamba.IO.SafeTensorsFile.Open(Path.Combine(fixture, "reference.safetensors"));
        int[,] Ids(string tensor)
        {
            var shape = reference.GetInfo(tensor).Shape;
            var flat = reference.ReadInt64(tensor);
            var ids = new int[shape[0], shape[1]];
            for (int b = 0; b < shape[0]; b++)
                for (int t = 0; t < shape[1]; t++) ids[b, t] = (int)flat[b * shape[1] + t];
            return ids;
        }
        var inputIds = Ids("input_ids");
        var labels = Ids("labels");
        model.ZeroGradients();
        var result = model.EvaluationLoss(inputIds, labels);
        double expected = reference.ReadFloat32("loss")[0];
        Assert.That(Math.Abs(result.MeanLoss - expected) / expected, Is.LessThan(1e-5));
        var trained = model.ForwardBackward(inputIds, labels, null, 1f, false);
        Assert.That(result.Count, Is.EqualTo(trained.Count));
        Assert.That(result.LossSum, Is.EqualTo(trained.LossSum).Within(1e-6).Percent);
        model.ZeroGradients();
        model.EvaluationLoss(inputIds, labels);
        foreach (var (_, g) in model.Gradients.Items)
        {
            var data = new float[g.ElementCount];
            model.Backend.Download(g, data);
            Assert.That(data.All(x => x == 0), "evaluation leaves the gradients alone");
        }
    }
}
