using Mamba.Compute.Cuda;
using Mamba.Model;
using Mamba.Native;

namespace Mamba.Tests.Gpu;

/// <summary>
/// Out of device memory, injected into the native allocation path (<c>mamba_debug_inject_alloc_failures</c>, through
/// <see cref="CudaBackend.InjectAllocationFailures"/>): each allocation of a generation fails in turn with
/// <see cref="MambaOutOfMemoryException"/> and leaves the model as it was (the next generation equals an untouched one,
/// the fast decode path is not given up); a failed workspace growth is retried by the next call; a session whose append
/// failed is intact or refuses as lost until Reset; the entry checks its arguments.
/// </summary>
[Category("Gpu")]
[NonParallelizable]
public class OutOfMemoryTests
{
    private static string TinyDir => Path.Combine(TestFixtures.Model("tiny"), "model");

    /// <summary>More than any request here allocates; a loop that reaches it never saw a request complete.</summary>
    private const int MaxPoints = 500;

    /// <summary>Runs <paramref name="action"/> with allocation <paramref name="k"/> armed to fail; returns the exception (or null) and how many allocations failed by injection.</summary>
    private static (Exception? Error, long Fired) Armed(CudaBackend backend, long k, Action action)
    {
        long before = backend.InjectAllocationFailures(k, 1);
        Exception? error = null;
        try
        {
            action();
        }
        catch (Exception e)
        {
            error = e;
        }
        long fired = backend.DisarmAllocationFailures() - before;
        return (error, fired);
    }

    private static void AssertInjected(Exception error, long fired, string what)
    {
        Assert.That(error, Is.InstanceOf<MambaOutOfMemoryException>(), $"{what}: {error}");
        Assert.That(error.Message, Does.Contain("injected"), what);
        Assert.That(fired, Is.EqualTo(1), what);
    }

    [Test]
    public void SkipThenCountAllocationsFailThenTheContextAllocatesAgain()
    {
        using var backend = GpuTestSupport.RequireCudaBackend();
        Assert.That(backend.InjectAllocationFailures(2, 3), Is.EqualTo(0));
        using var a = backend.AllocateUninitialized(DType.F32, 16);
        using var b = backend.AllocateUninitialized(DType.F32, 16);
        for (int i = 0; i < 3; i++)
        {
            var e = Assert.Throws<MambaOutOfMemoryException>(() => backend.AllocateUninitialized(DType.F32, 16))!;
            Assert.That(e.Message, Does.Contain("injected").And.Contain("cudaErrorMemoryAllocation"));
            Assert.That(e.Status, Is.EqualTo(MambaStatus.OutOfMemory));
        }
        using var c = backend.AllocateUninitialized(DType.F32, 16);
        Assert.That(backend.DisarmAllocationFailures(), Is.EqualTo(3), "three allocations failed by injection");
        Assert.That(backend.LiveTensorBytes, Is.EqualTo(3 * 64), "the failed allocations hold nothing");
        Assert.That(backend.InjectAllocationFailures(0, 0), Is.EqualTo(3), "disarming again: the total stays");
        using var d = backend.AllocateUninitialized(DType.F32, 16);
    }

    [Test]
    public void TheEntryRejectsANullContextAndNegativeCounts()
    {
        using var backend = GpuTestSupport.RequireCudaBackend();
        using (var nullContext = new MambaContextHandle())
        {
            var e = Assert.Throws<MambaInvalidArgumentException>(() =>
                MambaNative.ThrowIfFailed(NativeMethods.mamba_debug_inject_alloc_failures(nullContext, 0, 1, out _), "inject"))!;
            Assert.That(e.NativeMessage, Does.Contain("context is null"));
        }
        Assert.Throws<MambaInvalidArgumentException>(() => backend.InjectAllocationFailures(-1, 1));
        Assert.Throws<MambaInvalidArgumentException>(() => backend.InjectAllocationFailures(0, -1));
        // A rejected call arms nothing.
        using var t = backend.AllocateUninitialized(DType.F32, 4);
        Assert.That(backend.DisarmAllocationFailures(), Is.EqualTo(0));
    }

    [Test]
    public void AFailedWorkspaceGrowthIsRetriedByTheNextCall()
    {
        // A fresh context has no staging workspace yet; a bf16 upload allocates the tensor, then grows the staging slot.
        using var backend = GpuTestSupport.RequireCudaBackend();
        var data = Enumerable.Range(0, 1000).Select(i => (i % 64) * 0.5f).ToArray();
        var (error, fired) = Armed(backend, 1, () => backend.Upload(data, DType.BF16, data.Length).Dispose());
        Assert.That(error, Is.Not.Null, "the staging workspace had to grow");
        AssertInjected(error!, fired, "staging growth");
        Assert.That(error!.Message, Does.Contain("workspace allocation"));
        Assert.That(backend.LiveTensorBytes, Is.EqualTo(0), "the upload's tensor was freed");
        // The slot was left empty (not half-grown): the next upload grows it and the values come back.
        using var t = backend.Upload(data, DType.BF16, data.Length);
        var back = new float[data.Length];
        backend.Download(t, back);
        Assert.That(back, Is.EqualTo(data), "these values are exact in bf16");
    }

    [TestCase(DType.F32, 1), TestCase(DType.BF16, 1), TestCase(DType.F32, 3), TestCase(DType.BF16, 3)]
    public void EachAllocationOfAGenerationFailsInTurnAndTheNextGenerationIsUntouched(DType dt, int batch)
    {
        using var backend = GpuTestSupport.RequireCudaBackend();
        using var lm = MambaForCausalLM.FromPretrained(TinyDir, backend, dt);
        var prompt = GpuTestSupport.RandomPrompt(batch, 6, lm.Config.VocabSize, 7 + batch, lowest: 1);
        const int newTokens = 8;
        var expected = lm.GenerateGreedy(prompt, newTokens);
        // Twice: the second run binds the fast step to a new cache, as every later one does.
        Assert.That(lm.GenerateGreedy(prompt, newTokens), Is.EqualTo(expected));
        string? fastReason = lm.FastDecodeUnavailableReason, fusedReason = lm.FusedDecodeUnavailableReason;
        long fastSteps = lm.FastDecodeSteps;

        int failed = 0;
        int? completedAt = null;
        for (int k = 0; k < MaxPoints && completedAt is null; k++)
        {
            int[,]? got = null;
            var (error, fired) = Armed(backend, k, () => got = lm.GenerateGreedy(prompt, newTokens));
            if (error is not null)
            {
                AssertInjected(error, fired, $"allocation {k}");
                failed++;
            }
            else
            {
                Assert.That(got, Is.EqualTo(expected), $"completed with allocation {k} armed");
                if (fired == 0) completedAt = k;
            }
            Assert.That(lm.GenerateGreedy(prompt, newTokens), Is.EqualTo(expected), $"the generation after allocation {k} was armed");
        }
        TestContext.Progress.WriteLine($"{dt} batch {batch}: {failed} injected failures, the generation allocates {completedAt} times");
        Assert.That(completedAt, Is.Not.Null, $"a generation still reached the armed allocation after {MaxPoints}");
        Assert.That(failed, Is.GreaterThanOrEqualTo(2 * lm.Config.NumHiddenLayers), "a generation on a new cache allocates its states, scratch and decode step");
        // Running out of memory is no reason to give up the fast decode step.
        Assert.That(lm.FastDecodeUnavailableReason, Is.EqualTo(fastReason));
        Assert.That(lm.FusedDecodeUnavailableReason, Is.EqualTo(fusedReason));
        if (fastReason is null) Assert.That(lm.FastDecodeSteps, Is.GreaterThan(fastSteps), "the generations kept the fast decode step");
    }

    [Test]
    public void ASessionWhoseAppendFailedIsIntactOrRefusesUntilReset()
    {
        using var probe = GpuTestSupport.RequireCudaBackend();
        using var model = MambaModel.Load(TinyDir, new MambaModelOptions { Backend = BackendPreference.Cuda, DType = DType.F32 });
        var backend = (CudaBackend)model.Network.Backend;
        int[] prompt = [5, 9, 13, 2, 7], next = [11, 3];
        float[] first, second;
        using (var s = model.CreateSession())
        {
            first = s.Append(prompt).ToArray();
            second = s.Append(next).ToArray();
        }
        int intact = 0, lost = 0;
        int? completedAt = null;
        for (int k = 0; k < MaxPoints && completedAt is null; k++)
        {
            using var session = model.CreateSession();
            session.Append(prompt);
            var (error, fired) = Armed(backend, k, () => session.Append(next).ToArray());
            if (error is null)
            {
                Assert.That(session.Logits.ToArray(), Is.EqualTo(second), $"completed with allocation {k} armed");
                if (fired == 0) completedAt = k;
                continue;
            }
            AssertInjected(error, fired, $"allocation {k}");
            Assert.That(session.Tokens, Is.EqualTo(prompt), "a failed append records no token");
            Assert.That(session.Logits.ToArray(), Is.EqualTo(first), "a failed append keeps the logits");
            try
            {
                Assert.That(session.Append(next).ToArray(), Is.EqualTo(second), $"allocation {k}: the state was intact");
                intact++;
            }
            catch (InvalidOperationException e)
            {
                Assert.That(e.Message, Does.Contain("Reset"));
                Assert.Throws<InvalidOperationException>(() => session.SaveState(), "a lost state cannot be saved");
                lost++;
            }
            session.Reset();
            session.Append(prompt);
            Assert.That(session.Append(next).ToArray(), Is.EqualTo(second), $"allocation {k}: after Reset");
        }
        TestContext.Progress.WriteLine($"append: {intact} failures before the state changed, {lost} after; it allocates {completedAt} times");
        Assert.That(completedAt, Is.Not.Null);
        Assert.That(intact, Is.GreaterThan(0), "the scratch is allocated before the layers run");
        Assert.That(lost, Is.GreaterThan(0), "the logits are allocated after the layers ran");
    }

    [Test]
    public void AFailedFirstAppendLeavesAnEmptySessionThatWorks()
    {
        using var probe = GpuTestSupport.RequireCudaBackend();
        using var model = MambaModel.Load(TinyDir, new MambaModelOptions { Backend = BackendPreference.Cuda, DType = DType.F32 });
        var backend = (CudaBackend)model.Network.Backend;
        int[] prompt = [5, 9, 13, 2, 7];
        float[] first;
        using (var s = model.CreateSession()) first = s.Append(prompt).ToArray();
        int? completedAt = null;
        for (int k = 0; k < MaxPoints && completedAt is null; k++)
        {
            using var session = model.CreateSession();
            var (error, fired) = Armed(backend, k, () => session.Append(prompt).ToArray());
            if (error is null)
            {
                if (fired == 0) completedAt = k;
                continue;
            }
            AssertInjected(error, fired, $"allocation {k}");
            Assert.That(session.Tokens, Is.Empty);
            Assert.That(session.Append(prompt).ToArray(), Is.EqualTo(first), $"allocation {k}: the retried prefill");
        }
        Assert.That(completedAt, Is.GreaterThan(0));
    }
}
