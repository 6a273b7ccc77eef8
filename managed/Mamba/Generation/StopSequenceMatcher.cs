using System.Text;

namespace Mamba.Generation;

/// <summary>
/// Finds stop sequences in text that arrives piece by piece (decoded tokens) and says how much of the text is safe
/// to show, so that a streaming caller never prints any part of a stop sequence.
/// </summary>
/// <remarks>
/// <para>
/// Feed each decoded piece to <see cref="Append"/>. It returns the index, in the accumulated text
/// (<see cref="Text"/>), where the earliest stop sequence starts, or −1 while none has appeared; a stop sequence may
/// be split over any number of pieces. After each piece, <see cref="TakeSafeText"/> returns the text not yet taken
/// that can no longer turn out to be part of a stop sequence: text is held back while its end could still be the
/// beginning of one ("Hello\nUs" is held at "\nUs" for the stop sequence "\nUser:"). Once a stop sequence is found,
/// <see cref="TakeSafeText"/> returns everything before it and nothing after; the stop sequence itself and what
/// follows are never returned. When generation ends without a stop (end-of-sequence token, length limit),
/// <see cref="Flush"/> returns the held-back remainder, since it can no longer become a stop sequence.
/// </para>
/// <para>
/// Matching is ordinal (exact UTF-16 code units). The matcher keeps all the text of one generation; use one
/// instance per generated row. Not thread-safe.
/// </para>
/// </remarks>
public sealed class StopSequenceMatcher
{
    private readonly string[] _stops;
    private readonly int _longest;
    private readonly StringBuilder _text = new();
    private string? _textCache;
    private int _emitted;        // text[.._emitted] has been returned by TakeSafeText/Flush
    private int _pendingStart;   // no stop sequence can start before this index (unless it was found: StopIndex)

    /// <summary>Creates a matcher for <paramref name="stopSequences"/>.</summary>
    /// <param name="stopSequences">The stop strings; each must be non-empty. An empty list matches nothing and holds nothing back.</param>
    /// <exception cref="ArgumentException">A stop string is null or empty.</exception>
    public StopSequenceMatcher(IEnumerable<string> stopSequences)
    {
        ArgumentNullException.ThrowIfNull(stopSequences);
        _stops = stopSequences.ToArray();
        foreach (var s in _stops)
            if (string.IsNullOrEmpty(s))
                throw new ArgumentException("a stop sequence must be a non-empty string", nameof(stopSequences));
        _longest = _stops.Length == 0 ? 0 : _stops.Max(s => s.Length);
    }

    /// <summary>The stop strings.</summary>
    public IReadOnlyList<string> StopSequences => _stops;

    /// <summary>All the text appended so far (including a found stop sequence and anything after it in the same piece).</summary>
    public string Text => _textCache ??= _text.ToString();

    /// <summary>Where the found stop sequence starts in <see cref="Text"/>, or −1 while none has been found.</summary>
    public int StopIndex { get; private set; } = -1;

    /// <summary>The stop sequence that was found, or null.</summary>
    public string? MatchedStopSequence { get; private set; }

    /// <summary>True once a stop sequence has been found.</summary>
    public bool IsStopped => StopIndex >= 0;

    /// <summary>The text before the stop sequence (or all the text when none was found): what the generation produced.</summary>
    public string TextBeforeStop => IsStopped ? Text[..StopIndex] : Text;

    /// <summary>
    /// Appends a decoded piece and looks for a stop sequence. When several complete in this piece, the one that
    /// starts earliest wins (on a tie, the one listed first). After a stop has been found further pieces are ignored.
    /// </summary>
    /// <param name="piece">The decoded text of the latest token(s); may be empty.</param>
    /// <returns>The index in <see cref="Text"/> where the stop sequence starts, or −1 when there is none yet.</returns>
    public int Append(string piece)
    {
        ArgumentNullException.ThrowIfNull(piece);
        if (IsStopped) return StopIndex;
        if (piece.Length == 0) return -1;
        if (_stops.Length == 0)
        {
            Add(piece);
            _pendingStart = _text.Length;
            return -1;
        }
        Add(piece);
        // Only the text from _pendingStart on can hold (the start of) a stop sequence.
        int offset = _pendingStart;
        var tail = _text.ToString(offset, _text.Length - offset);

        // A stop sequence that starts at or after _pendingStart may have completed now.
        int best = -1;
        string? bestStop = null;
        foreach (var stop in _stops)
        {
            int at = tail.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (best < 0 || at < best))
            {
                best = at;
                bestStop = stop;
            }
        }
        if (best >= 0)
        {
            StopIndex = offset + best;
            MatchedStopSequence = bestStop;
            return StopIndex;
        }

        // Otherwise hold back the earliest suffix that is a (proper) prefix of some stop sequence.
        int pending = tail.Length;
        for (int p = Math.Max(0, tail.Length - (_longest - 1)); p < tail.Length; p++)
        {
            var rest = tail.AsSpan(p);
            bool prefix = false;
            foreach (var stop in _stops)
                if (stop.Length > rest.Length && stop.AsSpan().StartsWith(rest, StringComparison.Ordinal))
                {
                    prefix = true;
                    break;
                }
            if (prefix)
            {
                pending = p;
                break;
            }
        }
        _pendingStart = offset + pending;
        return -1;
    }

    /// <summary>
    /// Returns the text, not returned before, that can no longer be part of a stop sequence (after a stop: all the
    /// text before it). Concatenating every result of <see cref="TakeSafeText"/> and <see cref="Flush"/> gives
    /// <see cref="TextBeforeStop"/>.
    /// </summary>
    public string TakeSafeText() => Take(IsStopped ? StopIndex : _pendingStart);

    /// <summary>
    /// Returns all the text not returned before, including the held-back tail that could still have started a stop
    /// sequence (after a stop: the text before it). Call when generation ends for another reason.
    /// </summary>
    public string Flush()
    {
        var text = Take(IsStopped ? StopIndex : _text.Length);
        if (!IsStopped) _pendingStart = _text.Length;
        return text;
    }

    private void Add(string piece)
    {
        _text.Append(piece);
        _textCache = null;
    }

    private string Take(int end)
    {
        if (end <= _emitted) return "";
        var result = _textCache is { } cached ? cached[_emitted..end] : _text.ToString(_emitted, end - _emitted);
        _emitted = end;
        return result;
    }
}
