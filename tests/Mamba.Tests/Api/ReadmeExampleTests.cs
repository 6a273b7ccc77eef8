using System.Reflection;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;

namespace Mamba.Tests.Api;

/// <summary>The README's C# example must compile against the library as it is.</summary>
public class ReadmeExampleTests
{
    /// <summary>Every ```csharp block of the README, in order.</summary>
    public static IEnumerable<TestCaseData> Examples()
    {
        var text = File.ReadAllText(FindReadme());
        int index = 0;
        for (int start = text.IndexOf("```csharp\n", StringComparison.Ordinal); start >= 0; start = text.IndexOf("```csharp\n", start, StringComparison.Ordinal))
        {
            start += "```csharp\n".Length;
            int end = text.IndexOf("```", start, StringComparison.Ordinal);
            yield return new TestCaseData(text[start..end]).SetArgDisplayNames($"block {index++}");
            start = end + 3;
        }
    }

    [Test]
    public void TheReadmeHasCSharpExamples() => Assert.That(Examples().Count(), Is.GreaterThanOrEqualTo(2), "the usage and the LoRA examples");

    [TestCaseSource(nameof(Examples))]
    public void ReadmeCSharpExampleCompiles(string code)
    {
        Assert.That(code.Split('\n', StringSplitOptions.RemoveEmptyEntries), Has.Length.InRange(5, 16), "an example should stay about 10 lines");

        var references = ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Concat([typeof(MambaModel).Assembly.Location, typeof(Microsoft.Extensions.AI.IChatClient).Assembly.Location])
            .Distinct()
            .Select(p => MetadataReference.CreateFromFile(p));
        var compilation = CSharpCompilation.Create("ReadmeExample",
            [CSharpSyntaxTree.ParseText(code, new CSharpParseOptions(LanguageVersion.Latest)), CSharpSyntaxTree.ParseText(ImplicitUsings)],
            references,
            new CSharpCompilationOptions(OutputKind.ConsoleApplication, nullableContextOptions: NullableContextOptions.Enable));
        using var output = new MemoryStream();
        var emit = compilation.Emit(output);
        var errors = emit.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).Select(d => d.ToString()).ToArray();
        Assert.That(errors, Is.Empty, string.Join("\n", errors));
        Assert.That(emit.Success, Is.True);
    }

    // What `dotnet new console` projects import implicitly (ImplicitUsings=enable), which the README assumes.
    private const string ImplicitUsings = """
        global using System;
        global using System.Collections.Generic;
        global using System.IO;
        global using System.Linq;
        global using System.Net.Http;
        global using System.Threading;
        global using System.Threading.Tasks;
        """;

    private static string FindReadme()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Mamba.sln"))) return Path.Combine(dir.FullName, "README.md");
        Assert.Fail("repository root (Mamba.sln) not found above the test binaries");
        return "";
    }
}
