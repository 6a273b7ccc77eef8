using Mamba.Compute;
using Microsoft.Extensions.AI;

namespace Mamba.Tests.Api;

public class SessionAndModelTests
{
    [Test]
    public void SessionAppendEqualsOneForwardAndSaveRestoreForkWork()
    {
        var model = ApiTestModels.Tiny;
        int[] ids = [5, 9, 100, 3, 77, 1, 42];
        var full = model.Network.Forward(new int[,] { { 5, 9, 100, 3, 77, 1, 42 } }).Logits;
        using var session = model.CreateSession();
        session.Append(ids[..3]);
        var saved = session.SaveState();
        using var fork = session.Fork();
        var after = session.Append(ids[3..]).ToArray();
        Assert.That(after, Is.EqualTo(full.Row(0, 6).ToArray()).Within(1e-4f));
        Assert.That(session.Tokens, Is.EqualTo(ids));
        // The fork still sits after 3 tokens and continues independently.
        Assert.That(fork.Tokens, Has.Count.EqualTo(3));
        Assert.That(fork.Append([8]).ToArray(), Is.Not.EqualTo(after));
        session.RestoreState(saved);
        Assert.That(session.Append(ids[3..]).ToArray(), Is.EqualTo(after));
        session.Reset();
        Assert.That(session.Tokens, Is.Empty);
        Assert.That(session.Append(ids).ToArray(), Is.EqualTo(full.Row(0, 6).ToArray()).Within(1e-4f));
    }

    [Test]
    public void ExplicitCudaWithoutAGpuThrowsWithTheReasonAndAutoFallsBack()
    {
        var dir = Path.Combine(TestFixtures.Model("tiny"), "model");
        using var auto = MambaModel.Load(dir, new MambaModelOptions { Backend = BackendPreference.Auto });
        if (auto.Backend.Kind == BackendKind.Cuda)
            Assert.Ignore("a usable GPU is present: the fallback cannot be observed here");
        Assert.That(auto.Backend.Kind, Is.EqualTo(BackendKind.Cpu));
        Assert.That(auto.Backend.FallbackReason, Is.Not.Null.And.Not.Empty);
        var e = Assert.Throws<Native.MambaBackendUnavailableException>(() => MambaModel.Load(dir, new MambaModelOptions { Backend = BackendPreference.Cuda }))!;
        Assert.That(e.ProbeLog, Is.Not.Empty);
    }

    [Test]
    public async Task LoadAsyncReportsProgressAndHonoursCancellation()
    {
        var dir = Path.Combine(TestFixtures.Model("tiny"), "model");
        var stages = new List<string>();
        var progress = new SynchronousProgress(p => stages.Add(p.Stage));
        using (var model = await MambaModel.LoadAsync(dir, new MambaModelOptions { Backend = BackendPreference.Cpu }, progress))
            Assert.That(model.Config.HiddenSize, Is.EqualTo(64));
        Assert.That(stages, Does.Contain("weights").And.Contain("ready"));
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.CatchAsync<OperationCanceledException>(() => MambaModel.LoadAsync(dir, null, null, cts.Token));
    }

    [Test]
    public void DisposedModelThrows()
    {
        var model = MambaModel.Load(Path.Combine(TestFixtures.Model("tiny"), "model"), new MambaModelOptions { Backend = BackendPreference.Cpu });
        var session = model.CreateSession();
        model.Dispose();
        Assert.Throws<ObjectDisposedException>(() => model.CreateSession());
        Assert.Throws<ObjectDisposedException>(() => session.Append([1]));
        Assert.ThrowsAsync<ObjectDisposedException>(() => model.GenerateAsync([1, 2]));
    }

    [Test]
    public async Task ChatClientContinuesThePlainTranscript()
    {
        var model = ApiTestModels.Default;
        using var client = model.AsChatClient();
        var messages = new List<ChatMessage> { new(ChatRole.System, "Be brief."), new(ChatRole.User, "Hi there"), new(ChatRole.Assistant, "Hello."), new(ChatRole.User, "Name a color.") };
        Assert.That(MambaChatClient.FormatPrompt(messages), Is.EqualTo("System: Be brief.\n\nUser: Hi there\nAssistant: Hello.\nUser: Name a color.\nAssistant:"));
        var options = new ChatOptions { MaxOutputTokens = 12, Temperature = 0 };
        var response = await client.GetResponseAsync(messages, options);
        var direct = await model.GenerateAsync(MambaChatClient.FormatPrompt(messages), new Mamba.Generation.GenerationOptions
        {
            MaxNewTokens = 12, StopSequences = [MambaChatClient.UserStop],
        });
        Assert.That(response.Text, Is.EqualTo(direct.Text.Trim()));
        Assert.That(response.Usage!.OutputTokenCount, Is.EqualTo(direct.Usage.GeneratedTokens));
        var streamed = new List<string>();
        await foreach (var update in client.GetStreamingResponseAsync(messages, options)) streamed.Add(update.Text);
        Assert.That(string.Concat(streamed).Trim(), Is.EqualTo(response.Text));
        Assert.That(client.GetService(typeof(ChatClientMetadata)), Is.InstanceOf<ChatClientMetadata>());
    }

    [Test]
    public async Task OneModelServesConcurrentCallsWithTheSequentialResults()
    {
        var model = ApiTestModels.Tiny;
        var prompts = Enumerable.Range(0, 6).Select(i => (IReadOnlyList<int>)Enumerable.Range(1, 3 + i).Select(t => (t * 37 + i * 11) % 512).ToArray()).ToArray();
        var options = new Mamba.Generation.GenerationOptions { MaxNewTokens = 10, EosTokenIds = [] };
        var sequential = new List<IReadOnlyList<int>>();
        foreach (var p in prompts) sequential.Add((await model.GenerateAsync(p, options)).OutputIds);
        var parallel = await Task.WhenAll(prompts.Select(p => Task.Run(() => model.GenerateAsync(p, options))));
        for (int i = 0; i < prompts.Length; i++)
            Assert.That(parallel[i].OutputIds, Is.EqualTo(sequential[i]), $"prompt {i}");
    }

    private sealed class SynchronousProgress(Action<ModelLoadProgress> report) : IProgress<ModelLoadProgress>
    {
        public void Report(ModelLoadProgress value) => report(value);
    }
}
