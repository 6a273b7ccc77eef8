using Mamba.Compute;
using Mamba.Compute.Cuda;
using Mamba.Lora;
using Mamba.Model;

namespace Mamba.Tests.Gpu;

/// <summary>
/// LoRA on CUDA: the two ops it added (scale-add, weight gradients left out for a frozen base) against the CPU oracle,
/// the PEFT fixture through check-reference, and a model with an adapter on every target against the same model on
/// the CPU (logits, loss, every factor's gradient, cached greedy decoding).
/// </summary>
[Category("Gpu")]
public class LoraGpuTests : GpuOpTestBase
{
    private static IMambaBackend CpuOps => Cpu;

    public static IEnumerable<TestCaseData> ScaleAddCases()
    {
        foreach (var x in AllDTypes)
            foreach (var y in AllDTypes)
            {
                yield return new TestCaseData(x, y, 0.75f, 1f, 1001);
                yield return new TestCaseData(x, y, -2f, 0f, 37);
            }
    }

    [TestCaseSource(nameof(ScaleAddCases))]
    public void ScaleAddMatchesTheCpu(DType xd, DType yd, float alpha, float beta, int count)
    {
        var rng = new Random(count + (int)xd * 7 + (int)yd);
        var x = Pair(Rand(rng, count), xd, count);
        var yData = Rand(rng, count);
        if (beta == 0f) Array.Fill(yData, float.NaN); // beta = 0 must not read y
        var y = Pair(yData, yd, count);
        if (beta == 0f) CpuOps.Zero(y.C);
        RequireGpu().ScaleAdd(x.G, alpha, y.G, beta);
        CpuOps.ScaleAdd(x.C, alpha, y.C, beta);
        AssertClose(y, Tol(yd), "y");
    }

    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    public void WeightGradientsLeftOutChangeNothingElse(DType dt)
    {
        var rng = new Random(5);
        int m = 37, n = 24, k = 20;
        var gpu = RequireGpu();
        var x = Pair(Rand(rng, m * k), dt, m, k);
        var w = Pair(Rand(rng, n * k), dt, n, k);
        var gy = Pair(Rand(rng, m * n), dt, m, n);
        var gxWith = Out(dt, m, k);
        var gxWithout = Out(dt, m, k);
        var gw = Own(gpu.Allocate(DType.F32, n, k));
        gpu.Zero(gw);
        gpu.LinearBackward(x.G, w.G, gy.G, gxWith.G, false, gw, null);
        gpu.LinearBackward(x.G, w.G, gy.G, gxWithout.G, false, null, null);
        Assert.That(Get(gpu, gxWithout.G), Is.EqualTo(Get(gpu, gxWith.G)), "grad x without the weight gradient");

        int vocab = 300;
        var targets = Enumerable.Range(0, m).Select(i => i % 5 == 0 ? -100 : rng.Next(vocab)).ToArray();
        var head = Pair(Rand(rng, vocab * k, -0.1, 0.1), dt, vocab, k);
        var hidden = Pair(Rand(rng, m * k), DType.F32, m, k);
        var ghWith = Out(DType.F32, m, k);
        var ghWithout = Out(DType.F32, m, k);
        var gHead = Own(gpu.Allocate(DType.F32, vocab, k));
        gpu.Zero(gHead);
        double a = gpu.LinearCrossEntropyBackward(hidden.G, head.G, targets, -100, 0.5f, ghWith.G, gHead, out int c1);
        double b = gpu.LinearCrossEntropyBackward(hidden.G, head.G, targets, -100, 0.5f, ghWithout.G, null, out int c2);
        Assert.That(b, Is.EqualTo(a));
        Assert.That(c2, Is.EqualTo(c1));
        Assert.That(Get(gpu, ghWithout.G), Is.EqualTo(Get(gpu, ghWith.G)), "grad hidden without the head gradient");
    }

    [TestCase(DType.F32)]
    [TestCase(DType.BF16)]
    public void AdapterFixturePassesOnCuda(DType dt)
    {
        RequireGpu();
        var fixture = TestFixtures.Model("lora-tiny");
        using var model = MambaForCausalLM.FromPretrained(Path.Combine(fixture, "model"), CudaBackend.Create(0, dt), dt);
        var rows = ReferenceCheck.Run(model, fixture, ReferenceCheck.AdapterGroups);
        Assert.Multiple(() =>
        {
            foreach (var row in rows) Assert.That(row.Passed && row.Compared, Is.True, row.Format());
        });
        Assert.That(rows.Count(r => r.Group == "grad"), Is.EqualTo(10));
    }

    private static MambaConfig Config => new()
    {
        VocabSize = 300, HiddenSize = 48, NumHiddenLayers = 2, StateSize = 16, UseBias = true, TieWordEmbeddings = false,
    };

    private static LoraAdapter RandomAdapter(MambaConfig model)
    {
        var config = new LoraConfig { R = 4, LoraAlpha = 16, TargetModules = ["embeddings", "in_proj", "x_proj", "dt_proj", "out_proj"] };
        var init = LoraAdapter.CreateInitialized(config, model, 3);
        var rng = new Random(17);
        return new LoraAdapter(config, init.Modules.ToDictionary(kv => kv.Key, kv => new LoraModuleWeights(
            new HostTensor(Rand(rng, kv.Value.A.Data.Length, -0.2, 0.2), kv.Value.A.Shape),
            new HostTensor(Rand(rng, kv.Value.B.Data.Length, -0.2, 0.2), kv.Value.B.Shape))));
    }

    [TestCase(DType.F32, 1e-4, 1e-3)]
    [TestCase(DType.BF16, 3e-2, 6e-2)]
    public void AModelWithAnAdapterOnEveryTargetMatchesTheCpu(DType dt, double forwardTol, double gradTol)
    {
        RequireGpu();
        var weights = MambaInitializer.Create(Config, seed: 21);
        var adapter = RandomAdapter(Config);
        using var cpu = new MambaForCausalLM(weights);
        using var gpu = new MambaForCausalLM(weights, CudaBackend.Create(0, dt), dt, ownsBackend: true);
        using var cpuAdapter = cpu.LoadAdapter(adapter, "a");
        using var gpuAdapter = gpu.LoadAdapter(adapter, "a");
        var rng = new Random(2);
        int batch = 3, length = 37;
        var ids = new int[batch, length];
        for (int b = 0; b < batch; b++)
            for (int t = 0; t < length; t++) ids[b, t] = rng.Next(Config.VocabSize);

        var expected = cpu.Forward(ids, new ForwardOptions { Adapter = cpuAdapter, Labels = ids });
        var got = gpu.Forward(ids, new ForwardOptions { Adapter = gpuAdapter, Labels = ids });
        AssertClose(got.Logits.Data, expected.Logits.Data, forwardTol, "logits");
        Assert.That(got.Loss!.Value, Is.EqualTo(expected.Loss!.Value).Within(forwardTol * expected.Loss.Value), "loss");
        var baseLogits = cpu.Forward(ids).Logits.Data;
        Assert.That(baseLogits.Zip(expected.Logits.Data).Max(p => Math.Abs(p.First - p.Second)), Is.GreaterThan(1e-2), "the adapter matters");

        foreach (var recompute in new[] { false, true })
        {
            cpuAdapter.EnableGradients();
            gpuAdapter.EnableGradients();
            cpu.ForwardBackward(ids, ids, null, 0.01f, recompute, cpuAdapter);
            gpu.ForwardBackward(ids, ids, null, 0.01f, recompute, gpuAdapter);
            foreach (var (id, m) in cpuAdapter.Modules)
            {
                var g = gpuAdapter.Modules[id];
                AssertClose(Get(gpu.Backend, g.GradDown!), Get(cpu.Backend, m.GradDown!), gradTol, $"{id} g A (recompute {recompute})");
                AssertClose(Get(gpu.Backend, g.GradUp!), Get(cpu.Backend, m.GradUp!), gradTol, $"{id} g B (recompute {recompute})");
            }
        }

        if (dt != DType.F32) return;
        // Cached greedy decoding with the adapter (prefill, then op-path steps): the same tokens as the CPU.
        var prompt = new int[,] { { 5, 77, 120, 9, 33 } };
        using var cpuLoop = global::Mamba.Generation.GenerationLoop.ForBatch(cpu, prompt, null, new global::Mamba.Generation.GenerationOptions { MaxNewTokens = 12, Adapter = "a" }, [0]);
        using var gpuLoop = global::Mamba.Generation.GenerationLoop.ForBatch(gpu, prompt, null, new global::Mamba.Generation.GenerationOptions { MaxNewTokens = 12, Adapter = "a" }, [0]);
        cpuLoop.Prefill();
        cpuLoop.Decode();
        gpuLoop.Prefill();
        gpuLoop.Decode();
        Assert.That(gpuLoop.Sequences(0), Is.EqualTo(cpuLoop.Sequences(0)));
    }
}
