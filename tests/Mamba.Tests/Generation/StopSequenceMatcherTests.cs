using System.Text;
using Mamba.Generation;

namespace Mamba.Tests.Generation;

public class StopSequenceMatcherTests
{
    [Test]
    public void StopSplitAcrossPiecesIsFoundAndNeverEmitted()
    {
        var m = new StopSequenceMatcher(["\nUser:"]);
        Assert.That(m.Append("Hello"), Is.EqualTo(-1));
        Assert.That(m.TakeSafeText(), Is.EqualTo("Hello"));
        Assert.That(m.Append(" there\nUs"), Is.EqualTo(-1));
        Assert.That(m.TakeSafeText(), Is.EqualTo(" there"), "\"\\nUs\" could start the stop sequence: held back");
        Assert.That(m.Append("er"), Is.EqualTo(-1));
        Assert.That(m.TakeSafeText(), Is.EqualTo(""));
        Assert.That(m.Append(": hi"), Is.EqualTo(11));
        Assert.That(m.IsStopped, Is.True);
        Assert.That(m.MatchedStopSequence, Is.EqualTo("\nUser:"));
        Assert.That(m.TakeSafeText(), Is.EqualTo(""));
        Assert.That(m.Flush(), Is.EqualTo(""));
        Assert.That(m.TextBeforeStop, Is.EqualTo("Hello there"));
        Assert.That(m.Text, Is.EqualTo("Hello there\nUser: hi"));
    }

    [Test]
    public void HeldTextIsReleasedWhenItStopsMatching()
    {
        var m = new StopSequenceMatcher(["\nUser:"]);
        m.Append("a\nU");
        Assert.That(m.TakeSafeText(), Is.EqualTo("a"));
        Assert.That(m.Append("x"), Is.EqualTo(-1));
        Assert.That(m.TakeSafeText(), Is.EqualTo("\nUx"));
    }

    [Test]
    public void StopInsideOnePieceCutsBeforeIt()
    {
        var m = new StopSequenceMatcher(["STOP"]);
        Assert.That(m.Append("abcSTOPdef"), Is.EqualTo(3));
        Assert.That(m.TakeSafeText(), Is.EqualTo("abc"));
        Assert.That(m.Append("more"), Is.EqualTo(3), "pieces after the stop are ignored");
        Assert.That(m.Flush(), Is.EqualTo(""));
    }

    [Test]
    public void OverlappingPrefixOfTheSameStop()
    {
        // "aab": after "aaa" only the last "aa" can still start it; the first "a" is safe.
        var m = new StopSequenceMatcher(["aab"]);
        var emitted = new StringBuilder();
        Assert.That(m.Append("a"), Is.EqualTo(-1));
        emitted.Append(m.TakeSafeText());
        Assert.That(emitted.ToString(), Is.EqualTo(""));
        Assert.That(m.Append("a"), Is.EqualTo(-1));
        emitted.Append(m.TakeSafeText());
        Assert.That(emitted.ToString(), Is.EqualTo(""));
        Assert.That(m.Append("a"), Is.EqualTo(-1));
        emitted.Append(m.TakeSafeText());
        Assert.That(emitted.ToString(), Is.EqualTo("a"));
        Assert.That(m.Append("b"), Is.EqualTo(1));
        emitted.Append(m.TakeSafeText());
        Assert.That(emitted.ToString(), Is.EqualTo("a"));
    }

    [Test]
    public void TwoStopsSharingText()
    {
        // "xy" is a prefix of "xyz" and "y" of "yq": all held; "q" completes "yq" at index 1.
        var m = new StopSequenceMatcher(["xyz", "yq"]);
        m.Append("xy");
        Assert.That(m.TakeSafeText(), Is.EqualTo(""));
        Assert.That(m.Append("q"), Is.EqualTo(1));
        Assert.That(m.MatchedStopSequence, Is.EqualTo("yq"));
        Assert.That(m.TakeSafeText(), Is.EqualTo("x"));
    }

    [Test]
    public void EarliestStartWinsWhenSeveralCompleteTogether()
    {
        var m = new StopSequenceMatcher(["cd", "bcd"]);
        Assert.That(m.Append("abcde"), Is.EqualTo(1));
        Assert.That(m.MatchedStopSequence, Is.EqualTo("bcd"));
        Assert.That(m.TakeSafeText(), Is.EqualTo("a"));
    }

    [Test]
    public void FlushReleasesTheHeldTailAtTheEnd()
    {
        var m = new StopSequenceMatcher(["\nUser:"]);
        m.Append("Hi\nUs");
        Assert.That(m.TakeSafeText(), Is.EqualTo("Hi"));
        Assert.That(m.Flush(), Is.EqualTo("\nUs"));
        Assert.That(m.Flush(), Is.EqualTo(""));
    }

    [Test]
    public void EmptyPiecesKeepHeldText()
    {
        var m = new StopSequenceMatcher(["b\nb"]);
        m.Append("ab");
        Assert.That(m.TakeSafeText(), Is.EqualTo("a"));
        Assert.That(m.Append(""), Is.EqualTo(-1));
        Assert.That(m.TakeSafeText(), Is.EqualTo(""), "an empty piece (a token still mid-character) must not release held text");
        Assert.That(m.Append("\nb"), Is.EqualTo(1));
        Assert.That(m.TakeSafeText(), Is.EqualTo(""));
    }

    [Test]
    public void NoStopsMeansEverythingIsSafe()
    {
        var m = new StopSequenceMatcher([]);
        Assert.That(m.Append("abc"), Is.EqualTo(-1));
        Assert.That(m.TakeSafeText(), Is.EqualTo("abc"));
    }

    [Test]
    public void EmptyStopStringIsRejected()
    {
        Assert.Throws<ArgumentException>(() => new StopSequenceMatcher(["ok", ""]));
    }

    [Test]
    public void RandomPiecesNeverEmitAnyPartOfAStop([Values(1, 2, 3, 4, 5, 6, 7, 8)] int seed)
    {
        // None of these stop strings is a substring of another, so the first stop to complete is also the
        // earliest occurrence in the whole text: the expected cut is min(IndexOf) over the stops.
        string[] stops = ["aab", "b\nb", "ba\n"];
        var random = new Random(seed);
        var text = new string(Enumerable.Range(0, 60).Select(_ => "ab\n"[random.Next(3)]).ToArray());
        int expectedCut = stops.Select(s => text.IndexOf(s, StringComparison.Ordinal)).Where(i => i >= 0).DefaultIfEmpty(-1).Min();
        var expectedOutput = expectedCut >= 0 ? text[..expectedCut] : text;

        var m = new StopSequenceMatcher(stops);
        var emitted = new StringBuilder();
        int found = -1;
        for (int at = 0; at < text.Length && found < 0;)
        {
            int len = Math.Min(random.Next(0, 4), text.Length - at);
            found = m.Append(text.Substring(at, len));
            at += len;
            emitted.Append(m.TakeSafeText());
            Assert.That(expectedOutput.StartsWith(emitted.ToString(), StringComparison.Ordinal), Is.True,
                $"emitted {emitted} is not a prefix of {expectedOutput}");
        }
        emitted.Append(m.Flush());
        Assert.That(found, Is.EqualTo(expectedCut), text);
        Assert.That(emitted.ToString(), Is.EqualTo(expectedOutput), text);
    }
}
