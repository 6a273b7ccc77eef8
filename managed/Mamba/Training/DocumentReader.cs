using System.Text;
using System.Text.Json;

namespace Mamba.Training;

/// <summary>
/// Streams the documents of training files as text pieces, without reading a whole file into memory.
/// <list type="bullet">
/// <item>A <c>.jsonl</c> file holds one document per non-blank line, in the string field named by the text field.</item>
/// <item>Any other file is plain UTF-8 text and one document; it is handed out paragraph by paragraph (a piece ends
/// after a blank line), so a file larger than memory streams. Tokenizing per paragraph matches tokenizing the whole
/// text except, at most, in how the blank line between two paragraphs splits into tokens.</item>
/// </list>
/// Invalid UTF-8 fails with the file and byte offset; a JSONL problem with the file and line number.
/// </summary>
internal static class DocumentReader
{
    /// <summary>One piece of text; <see cref="EndOfDocument"/> marks the last piece of a document.</summary>
    internal readonly record struct Piece(string Text, bool EndOfDocument);

    private static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>True for files read as JSONL.</summary>
    public static bool IsJsonl(string path) =>
        path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".ndjson", StringComparison.OrdinalIgnoreCase);

    /// <summary>The pieces of every document of <paramref name="path"/>.</summary>
    public static IEnumerable<Piece> Read(string path, string textField, CancellationToken cancellationToken = default)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"data file not found: {path}", path);
        if (new FileInfo(path).Length == 0) throw new MambaFormatException("the data file is empty", path);
        return IsJsonl(path) ? ReadJsonl(path, textField, cancellationToken) : ReadText(path, cancellationToken);
    }

    private static IEnumerable<Piece> ReadText(string path, CancellationToken cancellationToken)
    {
        var paragraph = new StringBuilder();
        bool any = false, previousBlank = false;
        foreach (var (line, _, _) in Lines(path))
        {
            cancellationToken.ThrowIfCancellationRequested();
            bool blank = string.IsNullOrWhiteSpace(line);
            if (!blank && previousBlank && paragraph.Length > 0)
            {
                yield return new Piece(paragraph.ToString(), false);
                paragraph.Clear();
            }
            paragraph.Append(line);
            if (!string.IsNullOrWhiteSpace(line)) any = true;
            previousBlank = blank;
        }
        if (!any) throw new MambaFormatException("the data file holds only whitespace", path);
        yield return new Piece(paragraph.ToString(), true);
    }

    private static IEnumerable<Piece> ReadJsonl(string path, string textField, CancellationToken cancellationToken)
    {
        int documents = 0;
        foreach (var (line, number, _) in Lines(path))
        {
            cancellationToken.ThrowIfCancellationRequested();
            if (string.IsNullOrWhiteSpace(line)) continue;
            string? text;
            try
            {
                using var json = JsonDocument.Parse(line);
                if (json.RootElement.ValueKind != JsonValueKind.Object)
                    throw new MambaFormatException($"line {number}: expected a JSON object, found {json.RootElement.ValueKind}", path);
                if (!json.RootElement.TryGetProperty(textField, out var field))
                    throw new MambaFormatException($"line {number}: no field '{textField}' (use --text-field to name the text field)", path, textField);
                if (field.ValueKind != JsonValueKind.String)
                    throw new MambaFormatException($"line {number}: field '{textField}' is {field.ValueKind}, not a string", path, textField);
                text = field.GetString();
            }
            catch (JsonException e)
            {
                throw new MambaFormatException($"line {number}: not valid JSON ({e.Message})", path, inner: e);
            }
            if (string.IsNullOrEmpty(text)) continue;
            documents++;
            yield return new Piece(text, true);
        }
        if (documents == 0) throw new MambaFormatException($"no non-empty '{textField}' value in any line", path, textField);
    }

    /// <summary>The lines of a file with their newline kept (1-based number, byte offset), decoded as strict UTF-8.</summary>
    private static IEnumerable<(string Line, int Number, long Offset)> Lines(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var buffer = new byte[1 << 16];
        var line = new MemoryStream();
        long offset = 0, lineStart = 0;
        int number = 0, read;
        bool first = true;
        while ((read = stream.Read(buffer, 0, buffer.Length)) > 0)
        {
            int start = 0;
            for (int i = 0; i < read; i++)
            {
                if (buffer[i] != (byte)'\n') continue;
                line.Write(buffer, start, i + 1 - start);
                start = i + 1;
                yield return (Decode(path, line, lineStart, ref first), ++number, lineStart);
                lineStart = offset + i + 1;
                line.SetLength(0);
            }
            line.Write(buffer, start, read - start);
            offset += read;
        }
        if (line.Length > 0) yield return (Decode(path, line, lineStart, ref first), ++number, lineStart);
    }

    private static string Decode(string path, MemoryStream line, long lineStart, ref bool first)
    {
        var bytes = line.GetBuffer().AsSpan(0, (int)line.Length);
        int skip = 0;
        if (first && bytes.StartsWith("\uFEFF"u8)) skip = 3; // a UTF-8 byte-order mark is not text
        first = false;
        try
        {
            return Strict.GetString(bytes[skip..]);
        }
        catch (DecoderFallbackException e)
        {
            long at = lineStart + skip + Math.Max(0, e.Index);
            throw new MambaFormatException($"not UTF-8: invalid byte 0x{bytes[(int)(at - lineStart)]:X2} at byte offset {at}", path, inner: e);
        }
    }
}
