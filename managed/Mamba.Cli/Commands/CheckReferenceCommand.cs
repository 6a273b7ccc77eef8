using System.CommandLine;
using Mamba.Compute;
using Mamba.Model;

namespace Mamba.Cli.Commands;

/// <summary>`mamba check-reference`: compare the model with a fixture's transformers outputs, tensor by tensor.</summary>
internal static class CheckReferenceCommand
{
    public static Command Create()
    {
        var fixture = new Argument<string>("fixture-dir") { Description = "A fixture folder holding model/ and reference.safetensors" };
        var model = new Option<string?>("--model") { Description = "Model folder to load instead of <fixture-dir>/model" };
        var device = CommonOptions.Device();
        var dtype = CommonOptions.DType();
        var threads = CommonOptions.Threads();
        var only = new Option<string?>("--only")
        {
            Description = $"Comma-separated groups: {string.Join(", ", ReferenceCheck.AllGroups)} (default: all)",
        };
        var command = new Command("check-reference", "Compare the model with reference outputs of transformers 5.17; exit 0 only when every selected tensor passes.")
        {
            fixture, model, device, dtype, threads, only,
        };
        command.SetAction(parse =>
        {
            var fixtureDir = parse.GetValue(fixture)!;
            var groups = parse.GetValue(only) is { } list
                ? list.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                : ReferenceCheck.DefaultGroups;
            var modelDir = parse.GetValue(model) ?? Path.Combine(fixtureDir, "model");
            using var backend = CommonOptions.CreateBackend(parse.GetValue(device)!, parse.GetValue(dtype)!, parse.GetValue(threads), out var activation);
            using var lm = MambaForCausalLM.FromPretrained(modelDir, backend, activation);
            Console.WriteLine($"model     {modelDir} ({lm.Config.Summary()}, stored {lm.StoredDType})");
            Console.WriteLine($"reference {Path.Combine(fixtureDir, "reference.safetensors")}");
            Console.WriteLine($"backend   {backend.Description}, activations {activation.ToShortName()}");
            if (lm.CpuWeights != CpuWeightFormat.F32)
            {
                var (forwardTol, lossTol) = ReferenceCheck.QuantizedWeightTolerances(lm.CpuWeights);
                Console.WriteLine(System.FormattableString.Invariant(
                    $"weights   {lm.CpuWeights.ToShortName()}: tolerances forward {forwardTol:E1}, loss {lossTol:E1} (12·u and u/2, u = {ReferenceCheck.WeightRoundingUnit(lm.CpuWeights):E2} per weight); gradients not checked"));
            }
            Console.WriteLine();
            Console.WriteLine($"{"tensor",-34} {"max abs err",12} {"rel err",12} {"tolerance",10}  result");
            var rows = ReferenceCheck.Run(lm, fixtureDir, groups, modelDir);
            foreach (var row in rows) Console.WriteLine(row.Format());
            int failed = rows.Count(r => !r.Passed);
            Console.WriteLine();
            int compared = rows.Count(r => r.Compared);
            Console.WriteLine(failed == 0 ? $"PASS: {compared} tensors within tolerance" : $"FAIL: {failed} of {compared} tensors outside tolerance");
            return failed == 0 ? 0 : 1;
        });
        return command;
    }
}
