using System.CommandLine;
using System.Globalization;
using Mamba.Model;
using Mamba.Native;

namespace Mamba.Cli.Commands;

/// <summary>`mamba info`: the backend probe (native library, GPU, driver) and a model summary.</summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var model = ModelOptions.Model();
        var command = new Command("info", "Show the backend probe (native library, GPU, driver) and the model's configuration and size.") { model };
        command.SetAction(parse =>
        {
            Console.WriteLine("backend probe");
            if (MambaNative.TryEnsureLoaded(out var error))
            {
                try
                {
                    int devices = MambaNative.DeviceCount();
                    Console.WriteLine($"  native library: {MambaNative.LoadedPath}");
                    Console.WriteLine($"  CUDA devices: {devices}");
                    foreach (var line in MambaNative.Describe().Split('\n', StringSplitOptions.RemoveEmptyEntries))
                        Console.WriteLine("  " + line.TrimEnd());
                }
                catch (MambaException e)
                {
                    Console.WriteLine($"  native library loaded, but CUDA is unusable: {e.Message}");
                }
            }
            else
            {
                Console.WriteLine("  native library: not available, the CPU backend will be used");
                foreach (var line in (error ?? "").Split('\n', StringSplitOptions.RemoveEmptyEntries))
                    Console.WriteLine("    " + line.TrimEnd());
            }
            Console.WriteLine($"  CPU: {Environment.ProcessorCount} cores, kernels run with {Mamba.Compute.Cpu.CpuVectorWidth.InstructionSet}");

            var dir = parse.GetValue(model) ?? ModelOptions.DefaultModelDirectory;
            var config = MambaConfig.FromFile(Path.Combine(dir, "config.json"));
            var weights = CheckpointLoader.LoadWeights(dir);
            Console.WriteLine();
            Console.WriteLine($"model {dir}");
            Console.WriteLine($"  {config.Summary()}");
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  parameters: {weights.ParameterCount:N0} (stored as {weights.StoredDType})"));
            long storedBytes = weights.ParameterCount * (weights.StoredDType == "F32" ? 4 : 2);
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  weight bytes: {storedBytes:N0} stored, {weights.ParameterCount * 4:N0} as f32, {weights.ParameterCount * 2:N0} as bf16"));
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  on the CPU: {CpuWeightBytes(config, CpuWeightFormat.Int8):N0} with --dtype int8, {CpuWeightBytes(config, CpuWeightFormat.BF16):N0} with --dtype bf16 (linear and embedding weights narrow, the rest f32)"));
            Console.WriteLine($"  tokenizer: {(File.Exists(Path.Combine(dir, "tokenizer.json")) ? "tokenizer.json" : "none")}");
            if (config.ExtraKeys.ContainsKey("mamba_dotnet_untrained"))
                Console.WriteLine("  untrained: random weights from the config's init scheme (a placeholder, not a language model)");
            var card = Path.Combine(dir, "README.md");
            if (File.Exists(card))
            {
                // The model card (Hugging Face's README.md), without image lines a terminal cannot show.
                Console.WriteLine();
                Console.WriteLine($"model card {card}");
                foreach (var line in File.ReadLines(card).Where(l => !l.TrimStart().StartsWith("![", StringComparison.Ordinal)))
                    Console.WriteLine("  " + line);
            }
            return 0;
        });
        return command;
    }

    /// <summary>Bytes the CPU backend holds for the parameters with narrow linear/embedding weights (int8: values + a float scale per row).</summary>
    private static long CpuWeightBytes(MambaConfig config, CpuWeightFormat format)
    {
        long total = 0;
        foreach (var entry in MambaParameterTable.Entries(config))
        {
            if (!MambaForCausalLM.IsLinearWeight(entry.Spec.Id)) total += 4 * entry.ElementCount;
            else if (format == CpuWeightFormat.Int8) total += entry.ElementCount + 4L * entry.DeviceShape[0];
            else total += 2 * entry.ElementCount;
        }
        return total;
    }
}
