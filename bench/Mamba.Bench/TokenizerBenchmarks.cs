using System.Security.Cryptography;
using System.Text;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Mamba.Tokenization;

namespace Mamba.Bench;

/// <summary>
/// Single-thread encode throughput of <see cref="MambaTokenizer"/> on long English and mixed (code, CJK, emoji,
/// accents) text: bench/data/tokenizer_*.txt, the same files bench/tokenizer_hf.py feeds Hugging Face
/// <c>tokenizers</c>. The MB/s column is UTF-8 input bytes per second of the mean time.
/// The tokenizer comes from $MAMBA_FIXTURES/tokenizer/tokenizer.json, else ../shared/fixtures beside the repository.
/// </summary>
[MemoryDiagnoser]
[Config(typeof(ThroughputConfig))]
public class TokenizerBenchmarks
{
    private MambaTokenizer _tokenizer = null!;
    private string _text = "";
    private int[] _ids = [];

    /// <summary>Which text: "english" or "mixed".</summary>
    [Params("english", "mixed")]
    public string Text { get; set; } = "english";

    /// <summary>Loads the tokenizer and the text, and warms the word cache (as the Hugging Face measurement does).</summary>
    [GlobalSetup]
    public void Setup()
    {
        _tokenizer = MambaTokenizer.FromFile(TokenizerPath());
        _text = LoadText(Text);
        _ids = [.. _tokenizer.Encode(_text)];
        var bytes = new byte[_ids.Length * 4];
        for (int i = 0; i < _ids.Length; i++) BitConverter.TryWriteBytes(bytes.AsSpan(4 * i), _ids[i]);
        Console.WriteLine($"// {Text}: {Encoding.UTF8.GetByteCount(_text)} bytes, {_ids.Length} tokens, sha256 {Convert.ToHexStringLower(SHA256.HashData(bytes))[..16]}");
    }

    /// <summary>Encode the whole text to ids.</summary>
    [Benchmark]
    public int Encode() => _tokenizer.Encode(_text).Count;

    /// <summary>Count tokens without building the id list.</summary>
    [Benchmark]
    public int CountTokens() => _tokenizer.CountTokens(_text);

    /// <summary>Decode the ids back to text.</summary>
    [Benchmark]
    public int Decode() => _tokenizer.Decode(_ids).Length;

    /// <summary>Repository root: the folder above the binaries that holds Mamba.sln.</summary>
    internal static string RepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Mamba.sln"))) return dir.FullName;
        }
        for (var dir = new DirectoryInfo(Directory.GetCurrentDirectory()); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Mamba.sln"))) return dir.FullName;
        }
        throw new DirectoryNotFoundException("repository root (the folder holding Mamba.sln) not found");
    }

    internal static string TokenizerPath()
    {
        var env = Environment.GetEnvironmentVariable("MAMBA_FIXTURES");
        var root = !string.IsNullOrEmpty(env) && Directory.Exists(env) ? env : Path.Combine(RepoRoot(), "..", "shared", "fixtures");
        var path = Path.GetFullPath(Path.Combine(root, "tokenizer", "tokenizer.json"));
        return File.Exists(path) ? path : throw new FileNotFoundException("tokenizer fixture not found: set MAMBA_FIXTURES", path);
    }

    internal static string LoadText(string name) =>
        File.ReadAllText(Path.Combine(RepoRoot(), "bench", "data", $"tokenizer_{name}.txt"), Encoding.UTF8);

    private sealed class ThroughputConfig : ManualConfig
    {
        public ThroughputConfig() => AddColumn(new ThroughputColumn());
    }

    /// <summary>MB/s of UTF-8 input (decoded output for Decode) for the mean time.</summary>
    private sealed class ThroughputColumn : IColumn
    {
        private static readonly Dictionary<string, long> Sizes = [];

        public string Id => "MBps";
        public string ColumnName => "MB/s";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 0;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "Megabytes (10^6) of UTF-8 text per second, from the mean";
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public bool IsAvailable(Summary summary) => true;
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            var report = summary[benchmarkCase];
            if (report?.ResultStatistics is not { } stats) return "-";
            string name = benchmarkCase.Parameters["Text"]?.ToString() ?? "english";
            long bytes;
            lock (Sizes)
            {
                if (!Sizes.TryGetValue(name, out bytes))
                    Sizes[name] = bytes = Encoding.UTF8.GetByteCount(LoadText(name));
            }
            return (bytes / (stats.Mean * 1e-9) / 1e6).ToString("F1");
        }
    }
}
