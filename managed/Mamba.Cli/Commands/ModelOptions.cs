using System.CommandLine;
using Mamba.Compute;
using Spectre.Console;

namespace Mamba.Cli.Commands;

/// <summary>The --model option with its bundled default, and loading with a spinner on stderr.</summary>
internal static class ModelOptions
{
    /// <summary>The bundled default model, copied beside the tool at build time.</summary>
    public static string DefaultModelDirectory => Path.Combine(AppContext.BaseDirectory, "default-model");

    public static Option<string?> Model() => new("--model")
    {
        Description = "Hugging Face model folder (config.json, model.safetensors, tokenizer.json); default: the bundled default model (trained by this project on public-domain and permissively licensed English; see its model card: mamba info)",
    };

    /// <summary>A console on stderr for spinners and notes, so stdout carries only the results.</summary>
    public static IAnsiConsole Status { get; } = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });

    public static BackendPreference ParseDevice(string device) => device.ToLowerInvariant() switch
    {
        "auto" => BackendPreference.Auto,
        "cpu" => BackendPreference.Cpu,
        "cuda" or "gpu" => BackendPreference.Cuda,
        _ => throw new ArgumentException($"--device {device}: expected auto, cpu or cuda"),
    };

    /// <summary>Loads the model with a spinner; says when the weights are untrained (an init-model folder).</summary>
    /// <summary>`--adapter DIR`: a PEFT LoRA adapter folder to apply (unmerged) on top of the model.</summary>
    public static Option<string?> Adapter() => new("--adapter") { Description = "A PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) to apply to the model" };

    /// <summary>Loads <paramref name="directory"/> (the adapter, if any, under its folder name); returns the adapter's name or null.</summary>
    public static string? LoadAdapter(MambaModel model, string? adapterDirectory)
    {
        if (adapterDirectory is null) return null;
        var adapter = model.LoadAdapter(adapterDirectory);
        Console.Error.WriteLine($"adapter: {adapterDirectory} (r {adapter.Config.R}, {adapter.ModuleIds.Count()} modules; unmerged, decoding on the op path)");
        return adapter.Name;
    }

    public static MambaModel Load(string? directory, string device, string dtype, int threads)
    {
        var dir = directory ?? DefaultModelDirectory;
        var options = CommonOptions.ModelOptionsFor(device, dtype, threads);
        MambaModel? model = null;
        var bar = Console.IsErrorRedirected ? null : Status;
        if (bar is null) model = MambaModel.Load(dir, options);
        else bar.Status().Spinner(Spinner.Known.Dots).Start($"Loading {Markup.Escape(dir)}", _ => model = MambaModel.Load(dir, options));
        Console.Error.WriteLine($"model: {dir} ({model!.Config.Summary()})");
        Console.Error.WriteLine($"backend: {model.Backend}");
        if (model.IsUntrained)
            Console.Error.WriteLine("note: this model has untrained random weights (made by init-model); its text is meaningless. Pass --model with a trained checkpoint, or leave --model out for the bundled one.");
        return model;
    }
}
