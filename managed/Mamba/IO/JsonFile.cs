using System.Text.Json;

namespace Mamba.IO;

/// <summary>
/// Reads the small JSON files of a model folder (config.json, generation_config.json, tokenizer.json and the
/// tokenizer's configuration files) with a byte limit and checks that every key and string is usable before a parser
/// sees them, so that a hostile file gives a <see cref="MambaFormatException"/> (or <see cref="MambaConfigException"/>)
/// naming the file and the entry instead of an exception of System.Text.Json.
/// </summary>
internal static class JsonFile
{
    /// <summary>Limit of config.json, generation_config.json, tokenizer_config.json and special_tokens_map.json (real ones are a few kB).</summary>
    public const long MaxConfigBytes = 16L << 20;

    /// <summary>Limit of tokenizer.json (GPT-NeoX's is 2 MB; the largest published ones are a few tens of MB).</summary>
    public const long MaxTokenizerBytes = 256L << 20;

    /// <summary>Builds the exception for a problem at <c>entry</c> (a key path such as <c>model.vocab</c>; empty for the root).</summary>
    public delegate Exception ErrorFactory(string entry, string message);

    /// <summary>
    /// The bytes of <paramref name="path"/>, at most <paramref name="maxBytes"/>. The file (a symbolic link is followed
    /// to its final target) must be a non-empty regular file no larger than the limit: a FIFO, socket or device reports
    /// size 0 and is refused before it is opened (opening a FIFO would block), and at most <paramref name="maxBytes"/> + 1
    /// bytes are ever read, so a file that grows meanwhile cannot make the read endless either.
    /// </summary>
    /// <param name="what">The file's role in messages, e.g. "config.json".</param>
    /// <exception cref="MambaFormatException">Missing, unreadable, empty, special or too large.</exception>
    public static byte[] ReadBounded(string path, long maxBytes, string what)
    {
        try
        {
            var file = ExistingFile(path, what);
            long length = file.Length;
            if (length == 0)
                throw new MambaFormatException($"{what} is empty or not a regular file (a FIFO, socket or device reports no size and is not read)", path);
            if (length > maxBytes)
                throw new MambaFormatException($"{what} is {length} bytes, more than the {maxBytes}-byte limit", path);
            using var stream = new FileStream(file.FullName, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
            var buffer = new byte[length + 1];
            int total = 0;
            while (total < buffer.Length)
            {
                int n = stream.Read(buffer, total, buffer.Length - total);
                if (n == 0) break;
                total += n;
            }
            if (total > length)
                throw new MambaFormatException($"{what} grew while it was read (more than the {length} bytes it reported)", path);
            return total == buffer.Length ? buffer : buffer[..total];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
        {
            throw new MambaFormatException($"cannot read {what}: {e.Message}", path, null, e);
        }
    }

    /// <summary>
    /// Refuses, before it is opened, a file that is not a non-empty regular file (after following symbolic links):
    /// opening a FIFO blocks until a writer comes, and a device reports size 0. Used for the weight files, which are
    /// then mapped or read with their own limits.
    /// </summary>
    /// <exception cref="MambaFormatException">The file is missing, empty, a FIFO, socket or device.</exception>
    public static void RefuseSpecialFile(string path, string what)
    {
        try
        {
            if (ExistingFile(path, what).Length == 0)
                throw new MambaFormatException($"{what} reports 0 bytes: empty (too short to hold anything) or not a regular file (a FIFO, socket or device, which is not read)", path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
        {
            throw new MambaFormatException($"cannot read {what}: {e.Message}", path, null, e);
        }
    }

    /// <summary>The file at <paramref name="path"/> after following symbolic links to their final target; it must exist and be a file.</summary>
    private static FileInfo ExistingFile(string path, string what)
    {
        FileSystemInfo info = new FileInfo(path);
        if (info.LinkTarget is not null)
            info = File.ResolveLinkTarget(path, returnFinalTarget: true) ?? info;
        if (info is not FileInfo file || !file.Exists)
            throw new MambaFormatException($"{what} does not exist or is not a file (a dangling link or a folder?)", path);
        return file;
    }

    /// <summary>
    /// Parses <paramref name="bytes"/> and checks the whole tree: no object holds a key twice (transformers and
    /// tokenizers would silently keep one of them), and every key and string decodes to valid UTF-16 (an escaped
    /// unpaired surrogate such as <c>"\ud800"</c> is valid JSON that System.Text.Json refuses to return as a string).
    /// The caller disposes the document.
    /// </summary>
    /// <exception cref="MambaFormatException">Not JSON (from <paramref name="what"/>), or what <paramref name="error"/> builds for a bad entry.</exception>
    public static JsonDocument Parse(byte[] bytes, string path, string what, ErrorFactory error, int maxDepth = 64,
        JsonCommentHandling comments = JsonCommentHandling.Disallow)
    {
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(bytes, new JsonDocumentOptions { AllowTrailingCommas = true, MaxDepth = maxDepth, CommentHandling = comments });
        }
        catch (JsonException e)
        {
            throw new MambaFormatException($"{what} is not valid JSON: {e.Message}", path, null, e);
        }
        try
        {
            CheckTree(doc.RootElement, error);
            return doc;
        }
        catch
        {
            doc.Dispose();
            throw;
        }
    }

    /// <summary><see cref="ReadBounded"/> then <see cref="Parse"/>.</summary>
    public static JsonDocument Read(string path, long maxBytes, string what, ErrorFactory error, int maxDepth = 64) =>
        Parse(ReadBounded(path, maxBytes, what), path, what, error, maxDepth);

    /// <summary>
    /// Checks every key and string under <paramref name="root"/> (valid UTF-16) and, with <paramref name="duplicates"/>,
    /// that no object holds a key twice; <paramref name="error"/> builds the exception for the first problem.
    /// </summary>
    public static void CheckTree(JsonElement root, ErrorFactory error, bool duplicates = true) => Check(root, "", error, duplicates);

    private static void Check(JsonElement element, string where, ErrorFactory error, bool duplicates)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
            {
                HashSet<string>? names = null;
                int index = 0;
                foreach (var property in element.EnumerateObject())
                {
                    string name;
                    try
                    {
                        name = property.Name;
                    }
                    catch (InvalidOperationException)
                    {
                        throw error(where, $"key {index} of {(where.Length == 0 ? "the root object" : "the object")} is not valid UTF-16 (an unpaired surrogate escape)");
                    }
                    string child = where.Length == 0 ? name : where + "." + name;
                    if (duplicates)
                    {
                        names ??= new HashSet<string>(StringComparer.Ordinal);
                        if (!names.Add(name))
                            throw error(child, "the key appears twice in one object");
                    }
                    Check(property.Value, child, error, duplicates);
                    index++;
                }
                break;
            }
            case JsonValueKind.Array:
            {
                int index = 0;
                foreach (var item in element.EnumerateArray())
                    Check(item, $"{where}[{index++}]", error, duplicates);
                break;
            }
            case JsonValueKind.String:
                try
                {
                    _ = element.GetString();
                }
                catch (InvalidOperationException)
                {
                    throw error(where, "the string is not valid UTF-16 (an unpaired surrogate escape)");
                }
                break;
        }
    }
}
