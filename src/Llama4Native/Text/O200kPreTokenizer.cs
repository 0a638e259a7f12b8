using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace Llama4Native.Text;

/// <summary>
/// The o200k_base / Llama 4 split pattern evaluated per Unicode code point (FORMAT.md section 2). The seven
/// alternatives are written by hand over <see cref="Rune"/>s, so letters and digits outside the BMP classify
/// as letters and digits (.NET's Regex sees two <c>Cs</c> surrogates there and splits wrongly).
/// Text without surrogates is scanned by the same code reading one char per code point (the BMP fast path);
/// <see cref="RegexSplit"/> is the plain-regex path kept for comparison and benchmarks.
/// </summary>
internal sealed class O200kPreTokenizer : PreTokenizer
{
    public const string Pattern =
        @"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    public static O200kPreTokenizer Instance { get; } = new();

    static readonly Regex regex = new(Pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text)
    {
        if (string.IsNullOrEmpty(text)) yield break;
        int i = 0;
        while (i < text.Length)
        {
            int len = Next(text.AsSpan(), i);
            yield return (i, len);
            i += len;
        }
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text)
    {
        var list = new List<(int, int)>();
        Split(text, list);
        return list;
    }

    /// <summary>Appends the (offset, length) pieces of <paramref name="text"/> to <paramref name="pieces"/>.</summary>
    public static void Split(ReadOnlySpan<char> text, List<(int Offset, int Length)> pieces)
    {
        int i = 0;
        while (i < text.Length)
        {
            int len = Next(text, i);
            pieces.Add((i, len));
            i += len;
        }
    }

    /// <summary>The plain .NET Regex split: exact on BMP-only text, wrong on astral letters/digits.</summary>
    public static void RegexSplit(string text, List<(int Offset, int Length)> pieces)
    {
        for (var m = regex.Match(text); m.Success; m = m.NextMatch()) pieces.Add((m.Index, m.Length));
    }

    // Code-point classes.
    const int ClsLetterUpper = 1;   // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
    const int ClsLetterLower = 2;   // [\p{Ll}\p{Lm}\p{Lo}\p{M}]
    const int ClsLetter = 4;        // \p{L}
    const int ClsNumber = 8;        // \p{N}
    const int ClsSpace = 16;        // \s (White_Space)
    const int ClsCrLf = 32;         // [\r\n]

    static readonly byte[] bmp = BuildBmp();

    static byte[] BuildBmp()
    {
        var t = new byte[65536];
        for (int c = 0; c < 65536; c++)
            t[c] = (c is >= 0xD800 and <= 0xDFFF) ? (byte)0 : Classify(c);
        return t;
    }

    static byte Classify(int cp)
    {
        var cat = Rune.GetUnicodeCategory(new Rune(cp));
        int f = 0;
        switch (cat)
        {
            case UnicodeCategory.UppercaseLetter:
            case UnicodeCategory.TitlecaseLetter: f = ClsLetterUpper | ClsLetter; break;
            case UnicodeCategory.LowercaseLetter: f = ClsLetterLower | ClsLetter; break;
            case UnicodeCategory.ModifierLetter:
            case UnicodeCategory.OtherLetter: f = ClsLetterUpper | ClsLetterLower | ClsLetter; break;
            case UnicodeCategory.NonSpacingMark:
            case UnicodeCategory.SpacingCombiningMark:
            case UnicodeCategory.EnclosingMark: f = ClsLetterUpper | ClsLetterLower; break;
            case UnicodeCategory.DecimalDigitNumber:
            case UnicodeCategory.LetterNumber:
            case UnicodeCategory.OtherNumber: f = ClsNumber; break;
        }
        if (Rune.IsWhiteSpace(new Rune(cp))) f |= ClsSpace;
        if (cp is '\r' or '\n') f |= ClsCrLf;
        return (byte)f;
    }

    /// <summary>Class of the code point at <paramref name="i"/> and its length in chars (1 or 2).</summary>
    static int At(ReadOnlySpan<char> s, int i, out int width)
    {
        char c = s[i];
        if (!char.IsSurrogate(c)) { width = 1; return bmp[c]; }
        if (char.IsHighSurrogate(c) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]))
        {
            width = 2;
            return Classify(char.ConvertToUtf32(c, s[i + 1]));
        }
        width = 1;
        return 0; // lone surrogate: not a letter, number or space
    }

    // [^\r\n\p{L}\p{N}]
    static bool IsPrefix(int cls) => (cls & (ClsCrLf | ClsLetter | ClsNumber)) == 0;
    // [^\s\p{L}\p{N}]
    static bool IsPunct(int cls) => (cls & (ClsSpace | ClsLetter | ClsNumber)) == 0;

    /// <summary>Length in chars of the pre-token starting at <paramref name="i"/> (always ≥ 1).</summary>
    static int Next(ReadOnlySpan<char> s, int i)
    {
        int n = s.Length;
        int c0 = At(s, i, out int w0);

        // Alternatives 1 and 2 (letters, optionally preceded by one non-letter/number char).
        if ((c0 & (ClsLetterUpper | ClsLetterLower)) != 0 || (IsPrefix(c0) && i + w0 < n))
        {
            int end = LetterWord(s, i + (IsPrefix(c0) ? w0 : 0), upperFirst: false);
            if (end < 0 && IsPrefix(c0)) end = LetterWord(s, i, upperFirst: false);
            if (end < 0) end = LetterWord(s, i + (IsPrefix(c0) ? w0 : 0), upperFirst: true);
            if (end < 0 && IsPrefix(c0)) end = LetterWord(s, i, upperFirst: true);
            if (end > 0) return end - i;
        }
        // 3: \p{N}{1,3}
        if ((c0 & ClsNumber) != 0)
        {
            int j = i + w0, k = 1;
            while (k < 3 && j < n) { int c = At(s, j, out int w); if ((c & ClsNumber) == 0) break; j += w; k++; }
            return j - i;
        }
        // 4: ' '?[^\s\p{L}\p{N}]+[\r\n/]*
        {
            int j = i;
            if (s[j] == ' ' && j + 1 < n) j++;
            int start = j;
            while (j < n) { int c = At(s, j, out int w); if (!IsPunct(c)) break; j += w; }
            if (j > start)
            {
                while (j < n && (s[j] == '\r' || s[j] == '\n' || s[j] == '/')) j++;
                return j - i;
            }
        }
        // 5..7: whitespace.
        if ((c0 & ClsSpace) != 0)
        {
            int j = i, lastCrLf = -1, lastStart = i;
            while (j < n)
            {
                int c = At(s, j, out int w);
                if ((c & ClsSpace) == 0) break;
                if ((c & ClsCrLf) != 0) lastCrLf = j;
                lastStart = j;
                j += w;
            }
            if (lastCrLf >= 0) return lastCrLf + 1 - i;     // \s*[\r\n]+
            if (j == n) return j - i;                        // \s+(?!\S) at the end
            if (lastStart > i) return lastStart - i;         // \s+(?!\S): leave the last space
            return j - i;                                    // \s+
        }
        // Unreachable for valid classes (every char matches one alternative); take one code point.
        return w0;
    }

    /// <summary>
    /// Alternative 1 (upperFirst false: U* W+ contraction?) or 2 (upperFirst true: U+ W* contraction?) starting
    /// at <paramref name="i"/>; returns the end index or -1.
    /// </summary>
    static int LetterWord(ReadOnlySpan<char> s, int i, bool upperFirst)
    {
        int n = s.Length;
        if (i >= n) return -1;
        // Maximal U run [i, e), remembering the end of the last W char inside it.
        int j = i, lastLowerEnd = -1;
        while (j < n)
        {
            int c = At(s, j, out int w);
            if ((c & ClsLetterUpper) == 0) break;
            j += w;
            if ((c & ClsLetterLower) != 0) lastLowerEnd = j;
        }
        int e = j, end;
        if (upperFirst)
        {
            if (e == i) return -1;
            end = e;
            while (end < n) { int c = At(s, end, out int w); if ((c & ClsLetterLower) == 0) break; end += w; }
        }
        else
        {
            // W+ right after the U run, else backtrack to the last W inside it.
            int k = e;
            while (k < n) { int c = At(s, k, out int w); if ((c & ClsLetterLower) == 0) break; k += w; }
            if (k > e) end = k;
            else if (lastLowerEnd > 0) end = lastLowerEnd;
            else return -1;
        }
        return end + Contraction(s, end);
    }

    /// <summary>(?i:'s|'t|'re|'ve|'m|'ll|'d) at <paramref name="i"/>: its length or 0.</summary>
    static int Contraction(ReadOnlySpan<char> s, int i)
    {
        if (i + 1 >= s.Length || s[i] != '\'') return 0;
        char a = s[i + 1];
        char b = i + 2 < s.Length ? s[i + 2] : '\0';
        switch (a)
        {
            case 's' or 'S' or '\u017F' or 't' or 'T' or 'm' or 'M' or 'd' or 'D': return 2;
            case 'r' or 'R': return b is 'e' or 'E' ? 3 : 0;
            case 'v' or 'V': return b is 'e' or 'E' ? 3 : 0;
            case 'l' or 'L': return b is 'l' or 'L' ? 3 : 0;
            default: return 0;
        }
    }
}
