namespace Mamba.Tests;

/// <summary>Locates the shared reference fixtures: $MAMBA_FIXTURES, else ../shared/fixtures above the repository root.</summary>
internal static class TestFixtures
{
    private static readonly Lazy<string?> RootPath = new(Find);

    /// <summary>The fixtures folder, or null when it cannot be found.</summary>
    public static string? Root => RootPath.Value;

    /// <summary>The fixtures folder; fails the test (not ignores it) when missing, since CI always has it.</summary>
    public static string RequireRoot()
    {
        var root = Root;
        if (root is null)
            Assert.Fail("reference fixtures not found: set MAMBA_FIXTURES or place them at ../shared/fixtures beside the repository");
        return root!;
    }

    public static string Model(string name) => Path.Combine(RequireRoot(), "models", name);

    public static string Tokenizer(string file) => Path.Combine(RequireRoot(), "tokenizer", file);

    public static readonly string[] ModelNames = ["tiny", "tiny-untied-bias", "small-long", "tiny-bf16"];

    private static string? Find()
    {
        var env = Environment.GetEnvironmentVariable("MAMBA_FIXTURES");
        if (!string.IsNullOrEmpty(env) && Directory.Exists(env))
            return env;
        // Walk up from the test binary to the repository root (the folder holding Mamba.sln), then ../shared/fixtures.
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Mamba.sln")))
            {
                var candidate = Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared", "fixtures"));
                return Directory.Exists(candidate) ? candidate : null;
            }
            dir = dir.Parent;
        }
        return null;
    }
}
