using System.Text;
using Mamba.Compute;
using Mamba.Compute.Cuda;
using Mamba.Generation;
using Mamba.Native;

namespace Mamba.Cli.Commands;

/// <summary>`mamba soak`'s out-of-memory phase (CUDA only): injected allocation failures, then a real out-of-memory.</summary>
internal static partial class SoakCommand
{
    /// <summary>Allocations tried per kind of request before the phase gives up (a request allocates a few dozen times).</summary>
    private const int MaxInjectionPoints = 2000;

    /// <summary>Rows of the generation that runs with device memory filled by ballast.</summary>
    private const int BallastBatchRows = 64;

    /// <summary>The ballast's buffer sizes, largest first: each size is allocated until the device refuses it.</summary>
    private static readonly long[] BallastChunks = [1L << 30, 1L << 26, 1L << 20];

    /// <summary>
    /// The out-of-memory phase. (a) Injected: for each kind of request (a streaming generation; a batch larger than any of
    /// the workload, so workspaces and decode buffers grow; a fresh session), allocation k = 0, 1, 2, ... of the model's
    /// context is made to fail (<see cref="CudaBackend.InjectAllocationFailures"/>) while one request runs: the request
    /// must throw <see cref="MambaOutOfMemoryException"/> or complete with the reference output. After each, with the
    /// injection disarmed, a failed session must be intact or say its state is lost, and work again after Reset; and a
    /// normal generation must equal its reference. A kind ends when a request completes without reaching the armed
    /// allocation. (b) Real: device memory is filled with ballast buffers (through <paramref name="probe"/>'s context), a
    /// batch of <see cref="BallastBatchRows"/> rows must throw <see cref="MambaOutOfMemoryException"/> (or, if it fits,
    /// equal its own run before the ballast); with the ballast freed every reference must come out again and device memory must be back
    /// within <paramref name="maxGrowthMiB"/> of <paramref name="baseline"/>. Mismatches go to <paramref name="expect"/>.
    /// </summary>
    /// <returns>The report lines, and whether device memory came back.</returns>
    private static async Task<(List<string> Lines, bool MemoryOk)> OomPhase(Mamba.MambaModel lm, CudaBackend probe, GenerationOptions options,
        Dictionary<(int, bool), (IReadOnlyList<int> Ids, string Text)> reference, Action<bool, string> expect, Func<long> used, long baseline,
        double maxGrowthMiB, CancellationToken ct)
    {
        var lines = new List<string>();
        var backend = (CudaBackend)lm.Network.Backend;
        const int prompt = 1;
        var next = lm.Encode(" and then");

        // The session's references, from a fresh session with nothing armed.
        float[] sessionFirst, sessionSecond;
        using (var s = lm.CreateSession())
        {
            sessionFirst = s.Append(Prompts[prompt]).ToArray();
            sessionSecond = s.Append(next).ToArray();
        }

        async Task<bool> Streaming()
        {
            var text = new StringBuilder();
            await foreach (var piece in lm.GenerateStreamingAsync(Prompts[prompt], options, ct)) text.Append(piece);
            return text.ToString() == reference[(prompt, false)].Text;
        }

        // More rows than any batch of the workload (at most Prompts.Length), so its first run grows workspaces and
        // buffers. On CUDA a batch row need not have the one-prompt bits (GEMV for one row, cuBLAS for several), so the
        // reference is the batch's first completed run, and every later completed run (the last one with nothing
        // reached) must equal it.
        var batchRows = Enumerable.Range(0, Prompts.Length + 2).Select(i => i % Prompts.Length).ToArray();
        IReadOnlyList<int>[]? batchReference = null;
        async Task<bool> Batch()
        {
            var results = await lm.GenerateBatchAsync(batchRows.Select(i => Prompts[i]).ToArray(), options, ct);
            batchReference ??= results.Select(r => r.OutputIds).ToArray();
            return batchRows.Select((_, j) => results[j].OutputIds.SequenceEqual(batchReference[j])).All(equal => equal);
        }

        Mamba.MambaSession? session = null;
        Task<bool> Session()
        {
            session = lm.CreateSession();
            bool first = session.Append(Prompts[prompt]).SequenceEqual(sessionFirst);
            bool second = session.Append(next).SequenceEqual(sessionSecond);
            return Task.FromResult(first && second);
        }

        int intact = 0, lost = 0, empty = 0;
        var promptIds = lm.Encode(Prompts[prompt]);
        void AfterSession(Exception? error)
        {
            using var s = session;
            session = null;
            if (s is null || error is null) return;
            try
            {
                // The failed append's tokens are not recorded; the state matches the recorded ones, or the session refuses as lost.
                if (s.Tokens.Count == 0)
                {
                    empty++;
                }
                else
                {
                    expect(s.Tokens.SequenceEqual(promptIds), $"oom session: after a failed append the session holds {s.Tokens.Count} tokens, not the prompt's {promptIds.Count}");
                    try
                    {
                        expect(s.Append(next).SequenceEqual(sessionSecond), "oom session: the append after a failed one differs from the reference");
                        intact++;
                    }
                    catch (InvalidOperationException)
                    {
                        lost++;
                    }
                }
                s.Reset();
                bool first = s.Append(Prompts[prompt]).SequenceEqual(sessionFirst);
                bool second = s.Append(next).SequenceEqual(sessionSecond);
                expect(first && second, "oom session: after a failed append and Reset, the session differs from the reference");
            }
            catch (Exception e) when (!ct.IsCancellationRequested)
            {
                expect(false, $"oom session: after a failed append ({error.GetType().Name}), the session threw {e.GetType().Name}: {e.Message}");
            }
        }

        int recoveries = 0;
        async Task Kind(string name, Func<Task<bool>> request, Action<Exception?>? after = null)
        {
            int oom = 0, absorbed = 0, other = 0;
            int? completedAt = null;
            for (int k = 0; k < MaxInjectionPoints && completedAt is null && other == 0; k++)
            {
                long before = backend.InjectAllocationFailures(k, 1);
                long fired;
                Exception? error = null;
                bool equal = false;
                try
                {
                    equal = await request();
                }
                catch (Exception e) when (!ct.IsCancellationRequested)
                {
                    error = e;
                }
                finally
                {
                    fired = backend.DisarmAllocationFailures() - before;
                }
                if (error is MambaOutOfMemoryException)
                {
                    oom++;
                    expect(fired == 1 && error.Message.Contains("injected", StringComparison.Ordinal),
                        $"oom {name}: allocation {k} armed, {fired} failed by injection: {error.Message}");
                }
                else if (error is not null)
                {
                    other++;
                    expect(false, $"oom {name}: allocation {k} armed: {error.GetType().Name}: {error.Message}");
                }
                else
                {
                    expect(equal, $"oom {name}: completed with allocation {k} armed ({fired} failed), but differs from the reference");
                    if (fired == 0) completedAt = k;
                    else absorbed++;
                }
                after?.Invoke(error);
                var check = await lm.GenerateAsync(Prompts[0], options, ct);
                expect(check.OutputIds.SequenceEqual(reference[(0, false)].Ids), $"oom {name}: the generation after allocation {k} was armed differs from the reference");
                recoveries++;
            }
            if (completedAt is null && other == 0) expect(false, $"oom {name}: still reaching the armed allocation after {MaxInjectionPoints} tries");
            lines.Add($"oom injected, {name}: {oom + absorbed + other} allocations failed in turn ({oom} MambaOutOfMemoryException, "
                + $"{absorbed} absorbed, {other} other exceptions); "
                + (completedAt is { } c ? $"the request allocates {c} times" : "no request completed untouched"));
        }

        await Kind("streaming", Streaming);
        await Kind($"batch of {batchRows.Length}", Batch);
        await Kind("session", Session, AfterSession);
        lines.Add($"oom injected: after each, a normal generation equal to its reference ({recoveries} checked); failed sessions: {empty} empty, "
            + $"{intact} intact, {lost} refused as lost, each equal to the reference after Reset");

        // (b) A real out-of-memory: fill the device with ballast, then a large batch.
        var ballast = new List<DeviceTensor>();
        long ballastBytes = 0, freeLeft = 0;
        string outcome;
        var rows = Enumerable.Range(0, BallastBatchRows).Select(i => i % Prompts.Length).ToArray();
        // The large batch's reference, before the ballast (the same batch, so the same kernels and bits).
        var rowsReference = (await lm.GenerateBatchAsync(rows.Select(i => Prompts[i]).ToArray(), options, ct)).Select(r => r.OutputIds).ToArray();
        try
        {
            foreach (long chunk in BallastChunks)
                while (true)
                {
                    try
                    {
                        ballast.Add(probe.AllocateUninitialized(DType.F32, checked((int)(chunk / sizeof(float)))));
                        ballastBytes += chunk;
                    }
                    catch (MambaOutOfMemoryException)
                    {
                        break;
                    }
                }
            freeLeft = probe.MemoryInfo().Free;
            try
            {
                var results = await lm.GenerateBatchAsync(rows.Select(i => Prompts[i]).ToArray(), options, ct);
                bool equal = rows.Select((_, j) => results[j].OutputIds.SequenceEqual(rowsReference[j])).All(e => e);
                expect(equal, $"oom real: the batch of {rows.Length} fitted beside the ballast but differs from its run before the ballast");
                outcome = equal ? "fitted, equal to the references" : "fitted, DIFFERENT from the references";
            }
            catch (MambaOutOfMemoryException e)
            {
                outcome = $"MambaOutOfMemoryException ({e.NativeMessage})";
            }
            catch (Exception e) when (!ct.IsCancellationRequested)
            {
                expect(false, $"oom real: the batch of {rows.Length} beside the ballast threw {e.GetType().Name}: {e.Message}");
                outcome = e.GetType().Name;
            }
        }
        finally
        {
            foreach (var t in ballast) t.Dispose();
        }
        int equalReferences = 0;
        for (int i = 0; i < Prompts.Length; i++)
            foreach (bool withAdapter in new[] { false, true })
            {
                var r = await lm.GenerateAsync(Prompts[i], options with { Adapter = withAdapter ? "soak" : null }, ct);
                bool equal = r.OutputIds.SequenceEqual(reference[(i, withAdapter)].Ids);
                expect(equal, $"oom real: '{Prompts[i]}' (adapter {withAdapter}) differs from the reference after the ballast was freed");
                if (equal) equalReferences++;
            }
        long now = used();
        double growth = (now - baseline) / 1048576.0;
        lines.Add($"oom real: ballast {ballastBytes / 1073741824.0:F2} GiB in {ballast.Count} buffers ({freeLeft / 1048576.0:F1} MiB left free); "
            + $"a batch of {rows.Length}: {outcome}");
        lines.Add($"oom real: with the ballast freed, {equalReferences}/{2 * Prompts.Length} references equal; device memory {now / 1048576.0:F1} MiB, "
            + $"{growth:F1} MiB over the workload's baseline (limit {maxGrowthMiB:F0})");
        return (lines, growth <= maxGrowthMiB);
    }
}
