using System.Buffers.Binary;
using System.Text;

namespace Mamba.Bench.Torch;

/// <summary>
/// TorchSharp 0.107.0's libLibTorchSharp.so was linked with GCC 13 and so asks for libstdc++'s version
/// GLIBCXX_3.4.32, which Debian 12 (GCC 12, GLIBCXX_3.4.30) lacks. The only symbol under that version is
/// <c>std::ios_base_library_init()</c>, which GCC 13's &lt;iostream&gt; merely references (<c>.globl</c>, no
/// relocation, never called), so the library works with the older libstdc++. This marks that version
/// requirement weak (VER_FLG_WEAK in .gnu.version_r) in the build output's copy of the library, before
/// TorchSharp loads it; the NuGet cache is not touched. A weak missing version is not an error for ld.so.
/// </summary>
internal static class NativeFixup
{
    private const string Needed = "GLIBCXX_3.4.32";

    public static void Apply()
    {
        if (!OperatingSystem.IsLinux()) return;
        var lib = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        if (!File.Exists(lib) || SystemHas(Needed)) return;
        var bytes = File.ReadAllBytes(lib);
        if (MarkWeak(bytes, Needed))
        {
            File.WriteAllBytes(lib, bytes);
            Console.WriteLine($"note: marked {Needed} weak in {lib} (system libstdc++ lacks it; see NativeFixup.cs)");
        }
    }

    private static bool SystemHas(string version)
    {
        foreach (var path in new[] { "/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6" })
            if (File.Exists(path))
                return Encoding.ASCII.GetString(File.ReadAllBytes(path)).Contains(version + "\0", StringComparison.Ordinal);
        return true; // unknown layout: leave the library alone
    }

    /// <summary>Sets VER_FLG_WEAK on the Vernaux entry named <paramref name="version"/>; true if it changed.</summary>
    private static bool MarkWeak(byte[] elf, string version)
    {
        var s = elf.AsSpan();
        if (s.Length < 64 || s[0] != 0x7f || s[1] != (byte)'E' || s[4] != 2 || s[5] != 1) return false; // ELF64 LE only
        long shoff = BinaryPrimitives.ReadInt64LittleEndian(s[0x28..]);
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(s[0x3A..]);
        int shnum = BinaryPrimitives.ReadUInt16LittleEndian(s[0x3C..]);
        for (int i = 0; i < shnum; i++)
        {
            var sh = s[(int)(shoff + (long)i * shentsize)..];
            uint type = BinaryPrimitives.ReadUInt32LittleEndian(sh[4..]);
            if (type != 0x6ffffffe) continue; // SHT_GNU_verneed
            long off = BinaryPrimitives.ReadInt64LittleEndian(sh[0x18..]);
            int link = (int)BinaryPrimitives.ReadUInt32LittleEndian(sh[0x28..]);
            long strOff = BinaryPrimitives.ReadInt64LittleEndian(s[(int)(shoff + (long)link * shentsize + 0x18)..]);
            bool changed = false;
            long vn = off;
            while (true)
            {
                int cnt = BinaryPrimitives.ReadUInt16LittleEndian(s[(int)(vn + 2)..]);
                long aux = vn + BinaryPrimitives.ReadUInt32LittleEndian(s[(int)(vn + 8)..]);
                for (int a = 0; a < cnt; a++)
                {
                    uint name = BinaryPrimitives.ReadUInt32LittleEndian(s[(int)(aux + 8)..]);
                    int start = (int)(strOff + name), end = start;
                    while (s[end] != 0) end++;
                    if (Encoding.ASCII.GetString(s[start..end]) == version)
                    {
                        ushort flags = BinaryPrimitives.ReadUInt16LittleEndian(s[(int)(aux + 4)..]);
                        if ((flags & 2) == 0)
                        {
                            BinaryPrimitives.WriteUInt16LittleEndian(s[(int)(aux + 4)..], (ushort)(flags | 2));
                            changed = true;
                        }
                    }
                    aux += BinaryPrimitives.ReadUInt32LittleEndian(s[(int)(aux + 12)..]);
                }
                uint next = BinaryPrimitives.ReadUInt32LittleEndian(s[(int)(vn + 12)..]);
                if (next == 0) break;
                vn += next;
            }
            return changed;
        }
        return false;
    }
}
