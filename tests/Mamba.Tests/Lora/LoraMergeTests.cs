using Mamba.IO;
using Mamba.Lora;
using Mamba.Model;

namespace Mamba.Tests.Lora;

/// <summary>
/// The adapter's merge deltas against PEFT: adding <see cref="LoraAdapter.WeightDelta"/> to the lora-tiny base weights
/// must give the logits PEFT's <c>merge_and_unload()</c> gave (<c>merged.logits</c>, float64 reference), on the CPU.
/// </summary>
public class LoraMergeTests
{
    private static ParameterId Parameter(LoraTarget target) => target switch
    {
        LoraTarget.Embeddings => ParameterId.Embeddings,
        LoraTarget.InProj => ParameterId.InProjWeight,
        LoraTarget.XProj => ParameterId.XProjWeight,
        LoraTarget.DtProj => ParameterId.DtProjWeight,
        LoraTarget.OutProj => ParameterId.OutProjWeight,
        _ => throw new ArgumentOutOfRangeException(nameof(target)),
    };

    private static double RelativeError(float[] got, float[] reference)
    {
        double maxRef = 0, maxErr = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            maxRef = Math.Max(maxRef, Math.Abs(reference[i]));
            maxErr = Math.Max(maxErr, Math.Abs(got[i] - (double)reference[i]));
        }
        return maxErr / maxRef;
    }

    [Test]
    public void MergedFixtureAdapterGivesPeftsMergedLogits()
    {
        string dir = TestFixtures.Model("lora-tiny");
        using var lm = MambaForCausalLM.FromPretrained(Path.Combine(dir, "model"), new MambaModelOptions { Backend = BackendPreference.Cpu });
        var adapter = LoraAdapter.Load(Path.Combine(dir, "adapter"));
        using var reference = SafeTensorsFile.Open(Path.Combine(dir, "reference.safetensors"));
        var flat = reference.ReadInt64("input_ids");
        var expected = reference.ReadFloat32("merged.logits");
        int batch = 2, length = flat.Length / batch;  // meta.json: batch 2
        var ids = new int[batch, length];
        for (int i = 0; i < flat.Length; i++) ids[i / length, i % length] = (int)flat[i];

        var baseLogits = lm.Forward(ids).Logits.Data;
        Assert.That(RelativeError(baseLogits, expected), Is.GreaterThan(1e-2), "the adapter must change the logits for this test to mean anything");

        var be = lm.Backend;
        foreach (var id in adapter.Modules.Keys)
        {
            var parameter = id.IsEmbedding ? lm.Parameters[ParameterId.Embeddings] : lm.Parameters[Parameter(id.Target), id.Layer];
            var w = new float[parameter.ElementCount];
            be.Download(parameter, w);
            var delta = adapter.WeightDelta(id);
            Assert.That(delta, Has.Length.EqualTo(w.Length), id.ModulePath);
            for (int i = 0; i < w.Length; i++) w[i] += delta[i];
            using var merged = be.Upload(w, parameter.DType, parameter.Shape);
            be.Copy(merged, parameter);
        }
        var mergedLogits = lm.Forward(ids).Logits.Data;
        Assert.That(RelativeError(mergedLogits, expected), Is.LessThanOrEqualTo(1e-4), "merged logits (CPU float32 forward tolerance)");
    }
}
