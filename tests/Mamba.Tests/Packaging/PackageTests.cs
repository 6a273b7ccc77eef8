using System.Diagnostics;
using System.IO.Compression;
using System.Text.Json;
using Mamba.Generation;
using Mamba.Tests.Cli;

namespace Mamba.Tests.Packaging;

/// <summary>
/// The packages as a user gets them: `dotnet pack` of the library (MambaSharp) and the tool (MambaSharp.Cli) into a
/// temporary local feed, then a fresh console app that references MambaSharp and generates on the CPU, and
/// `dotnet tool install --tool-path` of the tool, whose `mamba generate` must find its bundled default model.
/// Packing uses the build output of this test's configuration (--no-build), so it takes seconds, not a rebuild.
/// Packages get a unique prerelease version and the console app restores into its own packages folder (the user's
/// global folder serves only as a read-only fallback for the dependencies), so no stale copy is ever restored and
/// nothing is left in the user's NuGet cache.
/// </summary>
[TestFixture]
[Category("Package")]
[NonParallelizable]
public class PackageTests
{
#if DEBUG
    private const string Configuration = "Debug";
#else
    private const string Configuration = "Release";
#endif
    private const string LibraryId = "MambaSharp";
    private const string ToolId = "MambaSharp.Cli";
    private static readonly TimeSpan CommandTimeout = TimeSpan.FromMinutes(4);

    private string _dotnet = "";
    private string _repo = "";
    private string _work = "";
    private string _feed = "";
    private string _version = "";
    private string _libraryPackage = "";
    private string _toolPackage = "";
    private bool _nativeBuilt;

    [OneTimeSetUp]
    public void PackIntoLocalFeed()
    {
        _dotnet = FindDotnetSdk() ?? "";
        if (_dotnet.Length == 0)
            Assert.Ignore("the dotnet SDK is not on PATH (dotnet --list-sdks lists none): the package tests need it to pack, build and install");
        _repo = FindRepositoryRoot();
        _nativeBuilt = File.Exists(Path.Combine(_repo, "build", "native", "libmamba.so"));
        _work = Directory.CreateTempSubdirectory("mamba-package-test-").FullName;
        _feed = Path.Combine(_work, "feed");
        Directory.CreateDirectory(_feed);
        string suffix = $"packagetest.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";
        foreach (var project in new[] { "managed/Mamba/Mamba.csproj", "managed/Mamba.Cli/Mamba.Cli.csproj" })
        {
            var output = Dotnet(_repo, "pack", Path.Combine(_repo, project), "-c", Configuration, "--no-build", "--version-suffix", suffix, "-o", _feed);
            if (project.Contains("Cli", StringComparison.Ordinal)) continue;
            // The library's pack says which package it made.
            Assert.That(output, _nativeBuilt ? Does.Contain("packed with the CUDA library") : Does.Contain("CPU-only package produced"));
        }
        _version = typeof(MambaModel).Assembly.GetName().Version is { } v ? $"{v.Major}.{v.Minor}.{v.Build}-{suffix}" : throw new InvalidOperationException("no assembly version");
        _libraryPackage = Path.Combine(_feed, $"{LibraryId}.{_version}.nupkg");
        _toolPackage = Path.Combine(_feed, $"{ToolId}.{_version}.nupkg");
        Assert.That(_libraryPackage, Does.Exist);
        Assert.That(_toolPackage, Does.Exist);
    }

    [OneTimeTearDown]
    public void DeleteWorkFolder()
    {
        if (_work.Length > 0 && Directory.Exists(_work))
            try { Directory.Delete(_work, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    [Test]
    public void LibraryPackageHoldsAssemblyDocsReadmeSymbolsAndNativeLibraryWhenBuilt()
    {
        var entries = Entries(_libraryPackage);
        Assert.That(entries, Is.SupersetOf(new[] { "lib/net10.0/Mamba.Core.dll", "lib/net10.0/Mamba.Core.xml", "README.md", $"{LibraryId}.nuspec" }));
        if (_nativeBuilt)
            Assert.That(entries, Does.Contain("runtimes/linux-x64/native/libmamba.so"));
        else
            Assert.That(entries.Where(e => e.StartsWith("runtimes/", StringComparison.Ordinal)), Is.Empty);
        Assert.That(Entries(Path.ChangeExtension(_libraryPackage, ".snupkg")), Does.Contain("lib/net10.0/Mamba.Core.pdb"));
        string nuspec = ReadEntry(_libraryPackage, $"{LibraryId}.nuspec");
        Assert.That(nuspec, Does.Contain($"<version>{_version}</version>").And.Contain("<readme>README.md</readme>")
            .And.Contain("<authors>").And.Contain("<description>").And.Contain("<tags>mamba")
            .And.Contain("<license type=\"expression\">Apache-2.0</license>"));
    }

    [Test]
    public void ToolPackageHoldsTheToolAndItsDefaultModel()
    {
        var entries = Entries(_toolPackage);
        const string dir = "tools/net10.0/any/";
        Assert.That(entries, Is.SupersetOf(new[] { dir + "DotnetToolSettings.xml", dir + "mamba.dll", dir + "Mamba.Core.dll", "README.md" }));
        var modelFiles = Directory.GetFiles(Path.Combine(_repo, "managed", "Mamba.Cli", "default-model")).Select(Path.GetFileName);
        Assert.That(entries, Is.SupersetOf(modelFiles.Select(f => dir + "default-model/" + f)));
        if (_nativeBuilt)
            Assert.That(entries, Does.Contain(dir + "runtimes/linux-x64/native/libmamba.so"));
        Assert.That(ReadEntry(_toolPackage, dir + "DotnetToolSettings.xml"), Does.Contain("<Command Name=\"mamba\""));
        Assert.That(Path.ChangeExtension(_toolPackage, ".snupkg"), Does.Exist);
    }

    [Test]
    public async Task FreshConsoleAppReferencingThePackageGeneratesOnTheCpu()
    {
        string app = Path.Combine(_work, "ConsumerApp");
        Directory.CreateDirectory(app);
        Dotnet(app, "new", "console", "--framework", "net10.0", "--no-restore");
        // Restores in the app's folder see the local feed first, then nuget.org; packages land in a folder of their own, and the user's
        // global packages folder (where this repository's own restore put the dependencies) is a fallback.
        var userPackages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p
            ? p : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <config><add key="globalPackagesFolder" value="{Path.Combine(_work, "app-packages")}" /></config>
              {(Directory.Exists(userPackages) ? $"<fallbackPackageFolders><add key=\"user\" value=\"{userPackages}\" /></fallbackPackageFolders>" : "")}
              <packageSources>
                <clear />
                <add key="local" value="{_feed}" />
                <add key="nuget.org" value="https://api.nuget.org/v3/index.json" />
              </packageSources>
              <packageSourceMapping>
                <packageSource key="local"><package pattern="{LibraryId}" /></packageSource>
                <packageSource key="nuget.org"><package pattern="*" /></packageSource>
              </packageSourceMapping>
            </configuration>
            """);
        Dotnet(app, "add", "package", LibraryId, "--version", _version, "--no-restore");
        File.WriteAllText(Path.Combine(app, "Program.cs"), """
            using Mamba;
            using Mamba.Generation;

            using var model = await MambaModel.LoadAsync(args[0], new MambaModelOptions { Backend = BackendPreference.Cpu });
            var result = await model.GenerateAsync("The Mamba architecture", new GenerationOptions { MaxNewTokens = 4 });
            Console.WriteLine($"backend: {model.Backend}");
            Console.WriteLine($"ids: {string.Join(',', result.OutputIds)}");
            Console.WriteLine($"finish: {result.FinishReason}");
            """);
        Dotnet(app, "build", "-c", "Release");
        string bin = Path.Combine(app, "bin", "Release", "net10.0");
        Assert.That(Path.Combine(bin, "Mamba.Core.dll"), Does.Exist);
        if (_nativeBuilt) // NuGet's native asset, where the runtime (and MambaNative) find it
            Assert.That(Path.Combine(bin, "runtimes", "linux-x64", "native", "libmamba.so"), Does.Exist);

        // A small model: the bundled default model (beside this test binary, from the CLI project).
        string modelDir = Path.Combine(AppContext.BaseDirectory, "default-model");
        string output = Dotnet(app, Path.Combine(bin, "ConsumerApp.dll"), modelDir);

        using var model = MambaModel.Load(modelDir, new MambaModelOptions { Backend = BackendPreference.Cpu });
        var expected = await model.GenerateAsync("The Mamba architecture", new GenerationOptions { MaxNewTokens = 4 });
        Assert.That(expected.OutputIds, Has.Count.EqualTo(4));
        Assert.That(output, Does.Contain("backend: Cpu"));
        Assert.That(output, Does.Contain($"ids: {string.Join(',', expected.OutputIds)}\n"), "the packaged library generates what this build does");
        Assert.That(output, Does.Contain("finish: Length"));
    }

    [Test]
    public void ToolInstallsFromTheFeedAndGeneratesWithItsBundledModel()
    {
        // As on a user's machine: no nuget.config of ours, the user's sources (nuget.org) plus the local feed.
        string toolPath = Path.Combine(_work, "tools");
        string installed = Dotnet(_work, "tool", "install", "--tool-path", toolPath, "--add-source", _feed, ToolId, "--version", _version);
        Assert.That(installed, Does.Contain("mamba"));
        string mamba = Path.Combine(toolPath, OperatingSystem.IsWindows() ? "mamba.exe" : "mamba");
        Assert.That(mamba, Does.Exist);

        // The apphost finds the runtime through DOTNET_ROOT, else the default install folders.
        var environment = new Dictionary<string, string>();
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable("DOTNET_ROOT")))
            environment["DOTNET_ROOT"] = Path.GetDirectoryName(new FileInfo(_dotnet).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? _dotnet)!;
        string output = Run(mamba, _work, environment, "generate", "--device", "cpu", "--prompt", "x", "--max-new-tokens", "3");
        // The installed tool ran on the default model inside its package, and generated what the in-process CLI does.
        Assert.That(output, Does.Contain(Path.Combine(".store", ToolId.ToLowerInvariant())).And.Contain("default-model"));
        Assert.That(output, Does.Contain("3 tokens, finish: Length").And.Not.Contain("untrained"), "the bundled default model is the trained one");
        var (code, json) = CliRunner.Run("generate", "--device", "cpu", "--prompt", "x", "--max-new-tokens", "3", "--json");
        Assert.That(code, Is.EqualTo(0), json);
        string text = JsonDocument.Parse(json.Split('\n').First(l => l.StartsWith('{'))).RootElement.GetProperty("text").GetString()!;
        Assert.That(output, Does.Contain("x" + text), "the tool streams the prompt, then the generated text");
    }

    // ---- helpers ----

    private static List<string> Entries(string package)
    {
        using var zip = ZipFile.OpenRead(package);
        return zip.Entries.Select(e => e.FullName).ToList();
    }

    private static string ReadEntry(string package, string name)
    {
        using var zip = ZipFile.OpenRead(package);
        using var reader = new StreamReader(zip.GetEntry(name)!.Open());
        return reader.ReadToEnd();
    }

    private string Dotnet(string workingDirectory, params string[] args) => Run(_dotnet, workingDirectory, null, args);

    /// <summary>Runs a process to completion (or kills it after <see cref="CommandTimeout"/>); fails the test on a non-zero exit.</summary>
    private static string Run(string file, string workingDirectory, Dictionary<string, string>? environment, params string[] args)
    {
        var start = new ProcessStartInfo(file)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in args) start.ArgumentList.Add(a);
        // The test host may run under MSBuild (dotnet test): its variables would point the child SDK at the parent's.
        foreach (var key in start.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
            start.Environment.Remove(key);
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        start.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";
        start.Environment["DOTNET_CLI_UI_LANGUAGE"] = "en";
        // No MSBuild worker nodes or compiler server outliving the command (they would hold its output pipes open).
        start.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        start.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
        start.Environment["UseSharedCompilation"] = "false";
        foreach (var (key, value) in environment ?? []) start.Environment[key] = value;

        var output = new System.Text.StringBuilder();
        using var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.Append(e.Data).Append('\n'); };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.Append(e.Data).Append('\n'); };
        var clock = Stopwatch.StartNew();
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (!process.WaitForExit(CommandTimeout))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"`{file} {string.Join(' ', args)}` did not finish in {CommandTimeout.TotalMinutes} minutes:\n{output}");
        }
        process.WaitForExit(); // drain the output
        string text;
        lock (output) text = output.ToString();
        TestContext.Progress.WriteLine($"package test: `{Path.GetFileName(file)} {string.Join(' ', args)}`: exit {process.ExitCode} in {clock.Elapsed.TotalSeconds:F1} s");
        Assert.That(process.ExitCode, Is.EqualTo(0), $"`{file} {string.Join(' ', args)}` in {workingDirectory} failed:\n{text}");
        return text;
    }

    /// <summary>The dotnet executable on PATH, if it has an SDK.</summary>
    private static string? FindDotnetSdk()
    {
        string name = OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet";
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, name);
            if (!File.Exists(candidate)) continue;
            try
            {
                using var p = Process.Start(new ProcessStartInfo(candidate, "--list-sdks") { RedirectStandardOutput = true, UseShellExecute = false })!;
                string sdks = p.StandardOutput.ReadToEnd();
                p.WaitForExit();
                return p.ExitCode == 0 && sdks.Trim().Length > 0 ? candidate : null;
            }
            catch (System.ComponentModel.Win32Exception) { return null; }
        }
        return null;
    }

    private static string FindRepositoryRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Mamba.sln")))
                return dir.FullName;
        throw new InvalidOperationException("the repository root (the folder holding Mamba.sln) was not found above " + AppContext.BaseDirectory);
    }
}
