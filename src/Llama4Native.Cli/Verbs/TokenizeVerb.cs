using System.Text;
using Llama4Native.Text;

namespace Llama4Native.Cli.Verbs;

/// <summary>`llama4 tokenize [--allow-special] --tokenizer PATH`: stdin text → JSON array of ids on stdout.</summary>
internal static class TokenizeVerb
{
    public static readonly VerbSpec Spec = new("tokenize", "encode stdin with the Llama 4 tokenizer, print the ids as JSON",
        [new("tokenizer", "PATH", "tokenizer.model, tokenizer.json, a checkpoint folder, or 'demo' (o200k_base + Llama 4 specials) (required)"),
         new("allow-special", null, "encode special-token text such as <|eot|> as the special token")]);

    public static int Run(string[] argv, TextWriter stdout, TextWriter stderr) => Run(argv, Console.In, stdout, stderr);

    public static int Run(string[] argv, TextReader stdin, TextWriter stdout, TextWriter stderr)
    {
        var a = new Args(argv, Spec);
        var path = a.Require("tokenizer", "(tokenizer.model, tokenizer.json, a checkpoint folder, or 'demo')");
        Llama4Tokenizer tok;
        if (path == "demo")
        {
            tok = Llama4Tokenizer.CreateDemo();
            stderr.WriteLine("llama4 tokenize: using the demo stand-in (o200k_base + Llama 4 specials): ids are NOT Llama 4's");
        }
        else
        {
            if (!File.Exists(path) && !Directory.Exists(path)) throw new UsageException($"--tokenizer '{path}' does not exist");
            tok = Llama4Tokenizer.FromFile(path);
        }
        var ids = tok.Encode(stdin.ReadToEnd(), a.Flag("allow-special"));
        var sb = new StringBuilder(ids.Length * 7 + 2).Append('[');
        for (int i = 0; i < ids.Length; i++)
        {
            if (i > 0) sb.Append(',');
            sb.Append(ids[i].ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        stdout.WriteLine(sb.Append(']').ToString());
        return 0;
    }
}
