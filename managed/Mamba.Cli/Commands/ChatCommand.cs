using System.CommandLine;
using Microsoft.Extensions.AI;

namespace Mamba.Cli.Commands;

/// <summary>`mamba chat`: an interactive loop on the model's <see cref="IChatClient"/>; Ctrl+C stops the current answer.</summary>
internal static class ChatCommand
{
    public static Command Create()
    {
        var model = ModelOptions.Model();
        var device = CommonOptions.Device("auto");
        var dtype = CommonOptions.DType();
        var threads = CommonOptions.Threads();
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Longest answer in tokens", DefaultValueFactory = _ => 128 };
        var system = new Option<string?>("--system") { Description = "A system message placed before the conversation" };
        var adapter = ModelOptions.Adapter();
        var command = new Command("chat", "Chat with the model (plain transcript format; type /exit or end input to quit, Ctrl+C stops an answer).")
        {
            model, device, dtype, threads, maxNew, system, adapter,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            using var lm = ModelOptions.Load(parse.GetValue(model), parse.GetValue(device)!, parse.GetValue(dtype)!, parse.GetValue(threads));
            using var client = lm.AsChatClient();
            var history = new List<ChatMessage>();
            if (parse.GetValue(system) is { Length: > 0 } text) history.Add(new ChatMessage(ChatRole.System, text));
            var options = new ChatOptions { MaxOutputTokens = parse.GetValue(maxNew) };
            if (ModelOptions.LoadAdapter(lm, parse.GetValue(adapter)) is { } adapterName)
                options.AdditionalProperties = new AdditionalPropertiesDictionary { [MambaChatClient.AdapterProperty] = adapterName };
            CancellationTokenSource? answer = null;
            ConsoleCancelEventHandler onCancel = (_, e) =>
            {
                // Ctrl+C during an answer stops that answer only; at the prompt it ends the program as usual.
                if (answer is { IsCancellationRequested: false })
                {
                    e.Cancel = true;
                    answer.Cancel();
                }
            };
            Console.CancelKeyPress += onCancel;
            try
            {
                Console.Error.WriteLine("Type a message; /exit or end of input quits.");
                while (!cancellationToken.IsCancellationRequested)
                {
                    Console.Write("> ");
                    var line = Console.ReadLine();
                    if (line is null || line.Trim() == "/exit") break;
                    if (line.Trim().Length == 0) continue;
                    history.Add(new ChatMessage(ChatRole.User, line));
                    answer = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                    var reply = new System.Text.StringBuilder();
                    try
                    {
                        await foreach (var update in client.GetStreamingResponseAsync(history, options, answer.Token))
                        {
                            Console.Write(update.Text);
                            reply.Append(update.Text);
                        }
                    }
                    catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                    {
                        Console.Write(" [stopped]");
                    }
                    finally
                    {
                        answer.Dispose();
                        answer = null;
                    }
                    Console.WriteLine();
                    history.Add(new ChatMessage(ChatRole.Assistant, reply.ToString().Trim()));
                }
            }
            finally
            {
                Console.CancelKeyPress -= onCancel;
            }
            return 0;
        });
        return command;
    }
}
