using Mamba.IO;
using Mamba.Lora;
using Mamba.Model;

namespace Mamba.Tests.Lora;

/// <summary>
/// The adapter's merge deltas against PEFT: adding <see cref="LoraAdapter.WeightDelta"/> to the lora-tiny base weights
/// (<see cref="MambaForCausalLM.MergeAdapter"/>) must give the logits PEFT's <c>merge_and_unload()</c> gave
/// (<c>merged.logits</c>, float64 reference), on the CPU.
/// </summary>
public class LoraMergeTests
{
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

        lm.MergeAdapter(adapter);
        var mergedLogits = lm.Forward(ids).Logits.Data;
        Assert.That(RelativeError(mergedLogits, expected), Is.LessThanOrEqualTo(1e-4), "merged logits (CPU float32 forward tolerance)");

        lm.UnmergeAdapter(adapter);
        Assert.That(RelativeError(lm.Forward(ids).Logits.Data, baseLogits), Is.LessThanOrEqualTo(1e-5), "unmerged = base up to float32 rounding");
    }

    [Test]
    public void AnAdapterForAnotherShapeIsRefusedBeforeAnyWeightChanges()
    {
        string dir = TestFixtures.Model("lora-tiny");
        var adapter = LoraAdapter.Load(Path.Combine(dir, "adapter"));
        using var other = new MambaForCausalLM(MambaInitializer.Create(new MambaConfig { VocabSize = 256, HiddenSize = 48, NumHiddenLayers = 2, StateSize = 8 }, seed: 3));
        var ids = new int[,] { { 1, 2, 3 } };
        var before = other.Forward(ids).Logits.Data;
        Assert.Throws<MambaFormatException>(() => other.MergeAdapter(adapter));
        Assert.That(other.Forward(ids).Logits.Data, Is.EqualTo(before));
    }
}
