using Mamba;
using Mamba.Lora;
using Mamba.Model;
// How strong may `mamba soak`'s test adapter be (B uniform in ±AMP, A, r 4, alpha 8 on in_proj, x_proj and the embedding,
// as the soak makes it)? On the CPU in f32, for each soak prompt: how far the adapter moves the prompt's last logits (on
// vs off), and how far the logits move when B is perturbed by a relative 2^-9 (about half a bf16 ulp), at each token of
// the greedy continuation (teacher-forced). Both as max |Δ| / max |logit|. A chaotic adapter turns rounding differences
// (one row through GEMV, several through cuBLAS) into other tokens.
//   dotnet run -c Release --project bench/SoakAdapterSensitivity -- AMP [MODEL_DIR]
string[] prompts = ["The Mamba architecture", "Once upon a time", "Hello", "The president said that", "A wise man once said", "In the beginning God created"];
double amp = double.Parse(args[0], System.Globalization.CultureInfo.InvariantCulture);
using var lm = MambaModel.Load(args.Length > 1 ? args[1] : Path.Combine(AppContext.BaseDirectory, "../../../../../managed/Mamba.Cli/default-model"), new MambaModelOptions { Backend = BackendPreference.Cpu });
int seed = 1;
var loraConfig = new LoraConfig { R = 4, LoraAlpha = 8, TargetModules = ["in_proj", "x_proj", "embeddings"] };
var init = LoraAdapter.CreateInitialized(loraConfig, lm.Config, seed);
LoraAdapter Make(double eps, int noiseSeed)
{
    var rng = new Random(seed + 1);
    var noise = new Random(noiseSeed);
    return new LoraAdapter(loraConfig, init.Modules.ToDictionary(kv => kv.Key, kv => new LoraModuleWeights(kv.Value.A,
        new HostTensor(kv.Value.B.Data.Select(_ => (float)((rng.NextDouble() - 0.5) * 2 * amp * (1 + eps * (noise.Next(2) * 2 - 1)))).ToArray(), kv.Value.B.Shape))));
}
var a0 = lm.Network.LoadAdapter(Make(0, 5), "a0");
var a1 = lm.Network.LoadAdapter(Make(1.0 / 512, 5), "a1");
int vocab = lm.Config.VocabSize;
foreach (var p in prompts)
{
    var g = await lm.GenerateAsync(p, lm.DefaultGenerationOptions with { MaxNewTokens = 16, MinNewTokens = 16, DoSample = false, Adapter = "a0", StopSequences = [] });
    var seq = lm.Encode(p).Concat(g.OutputIds).ToArray();
    var x = new int[1, seq.Length];
    for (int t = 0; t < seq.Length; t++) x[0, t] = seq[t];
    var l0 = lm.Network.Forward(x, new ForwardOptions { Adapter = a0 }).Logits.Data;
    var l1 = lm.Network.Forward(x, new ForwardOptions { Adapter = a1 }).Logits.Data;
    int promptLen = lm.Encode(p).Count;
    var line = new List<string>();
    for (int t = promptLen - 1; t < seq.Length; t++)
    {
        double d = 0, sc = 0, top = double.MinValue, second = double.MinValue;
        for (int v = 0; v < vocab; v++)
        {
            float u = l0[t * vocab + v];
            d = Math.Max(d, Math.Abs(u - l1[t * vocab + v])); sc = Math.Max(sc, Math.Abs(u));
            if (u > top) { second = top; top = u; } else if (u > second) second = u;
        }
        line.Add($"{d / sc:0.000}");
    }
    var off = lm.Network.Forward(x, new ForwardOptions { }).Logits.Data;
    double od = 0, osc = 0; int last = (promptLen - 1) * vocab;
    for (int v = 0; v < vocab; v++) { od = Math.Max(od, Math.Abs(l0[last + v] - off[last + v])); osc = Math.Max(osc, Math.Abs(off[last + v])); }
    Console.WriteLine($"amp {amp} {p}: adapter on vs off at the prompt {od / osc:0.000}; perturbed drift per token: {string.Join(" ", line)}");
}
