using System.Diagnostics;
using System.IO.Compression;
using System.Text.RegularExpressions;
using Llama4Native.Generation;
using Llama4Native.Tests.Checkpoints;

namespace Llama4Native.Tests.Packaging;

/// <summary>
/// The package as a host sees it: `dotnet pack` of src/Llama4Native into a temporary feed (a version of its own, so
/// the NuGet cache never serves an older build), the sample host (samples/Llama4Native.Sample, copied out of the
/// repository so none of its build settings apply) restored from that feed plus nuget.org, built, and run on the
/// tiny-scout fixture on the emulated device. Its greedy tokens must be the ones the in-repo library gives for the
/// same prompt, and its IChatClient reply the session's text. Needs the .NET SDK and nuget.org (CI has both);
/// ignored where the SDK or the sources are absent (the GPU bundle runs tests with the bare runtime).
/// </summary>
[Category("Emulator"), NonParallelizable]
public sealed class NuGetPackageTests
{
    const string Prompt = "Why is the sky blue?";
    const int Tokens = 4;

    [Test]
    public async Task PackedLibraryRestoresBuildsAndRunsInTheSampleHost()
    {
        string root = CkptTestUtil.RepoRoot;
        string project = Path.Combine(root, "src", "Llama4Native", "Llama4Native.csproj");
        string sample = Path.Combine(root, "samples", "Llama4Native.Sample");
        if (!File.Exists(project) || !Directory.Exists(sample)) Assert.Ignore("no sources here (GPU bundle): the package test needs the repository");
        if (Run("dotnet", ["--list-sdks"], root, 60).Output.Trim().Length == 0) Assert.Ignore("no .NET SDK (bare runtime): cannot pack");
        string config = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}") ? "Debug" : "Release";

        string version = $"0.1.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";
        string temp = Directory.CreateTempSubdirectory("l4-nuget-").FullName;
        string packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES") is { Length: > 0 } p ? p
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        try
        {
            // 1. Pack what the suite was built from (no rebuild: the test runs after the build).
            string feed = Path.Combine(temp, "feed");
            var pack = Run("dotnet", ["pack", project, "-c", config, "--no-build", "-o", feed, $"-p:Version={version}", "-nologo", "-v:q", "-nodeReuse:false"], root, 300);
            Assert.That(pack.Code, Is.EqualTo(0), "dotnet pack failed:\n" + pack.Output);
            string nupkg = Path.Combine(feed, $"Llama4Native.{version}.nupkg");
            Assert.That(File.Exists(nupkg), "no package at " + nupkg);
            using (var zip = ZipFile.OpenRead(nupkg))
            {
                var names = zip.Entries.Select(e => e.FullName).ToList();
                Assert.That(names, Is.SupersetOf(new[] { "README.md", "lib/net10.0/Llama4Native.dll", "lib/net10.0/Llama4Native.xml", "lib/net10.0/Llama4Native.Interop.dll", "lib/net10.0/Llama4Native.Interop.xml" }));
                using var nuspec = new StreamReader(zip.GetEntry("Llama4Native.nuspec")!.Open());
                string spec = nuspec.ReadToEnd();
                Assert.That(spec, Does.Contain("Microsoft.Extensions.AI.Abstractions"));
                Assert.That(spec, Does.Not.Contain("Llama4Native.Interop"), "the interop assembly travels inside the package, not as a dependency");
            }

            // 2. The sample, out of the tree, with its own nuget.config pointed at the temporary feed.
            string host = Path.Combine(temp, "sample");
            Directory.CreateDirectory(host);
            foreach (var f in new[] { "Program.cs", "Llama4Native.Sample.csproj", "nuget.config" })
                File.Copy(Path.Combine(sample, f), Path.Combine(host, f));
            string nugetConfig = Path.Combine(host, "nuget.config");
            string cfg = File.ReadAllText(nugetConfig);
            Assert.That(cfg, Does.Contain("value=\"../../artifacts/nuget\"").And.Contain("https://api.nuget.org/v3/index.json"));
            File.WriteAllText(nugetConfig, cfg.Replace("value=\"../../artifacts/nuget\"", $"value=\"{feed}\""));
            var build = Run("dotnet", ["build", host, "-c", "Release", $"-p:Llama4NativeVersion={version}", "-nologo", "-v:q", "-nodeReuse:false"], host, 480);
            Assert.That(build.Code, Is.EqualTo(0), "the sample did not build against the package:\n" + build.Output);

            // 3. Run it on the fixture, on the emulated device (kernel cache shared with the suite through LLAMA4_CACHE).
            string model = CkptTestUtil.FixtureModel("tiny-scout");
            string dll = Path.Combine(host, "bin", "Release", "net10.0", "Llama4Native.Sample.dll");
            var run = Run("dotnet", [dll, model, "--device", "emu", "--tokens", $"{Tokens}", "--prompt", Prompt, "--byte-codec"], host, 480);
            TestContext.Out.WriteLine(run.Output);
            Assert.That(run.Code, Is.EqualTo(0), "the sample failed:\n" + run.Output);

            // 4. The same tokens as the library built here.
            using var lib = Llama4Model.Load(model, new Llama4ModelOptions(Device: "emu", MaxContext: 512, Codec: new Generation.ChatApiTests.ByteCodec()));
            using var chat = lib.CreateSession();
            var want = new List<int>();
            await foreach (var piece in chat.GenerateAsync([new Message(MessageRole.User, Prompt)], new GenerationOptions { MaxNewTokens = Tokens }))
                want.Add(piece.TokenId);
            Assert.That(run.Output, Does.Contain("device: emulated device"));
            var m = Regex.Match(run.Output, @"^session: (\d+) tokens: ([0-9 ]*)$", RegexOptions.Multiline);
            Assert.That(m.Success, "no session line in:\n" + run.Output);
            Assert.That(m.Groups[2].Value.Split(' ', StringSplitOptions.RemoveEmptyEntries).Select(int.Parse), Is.EqualTo(want));
            Assert.That(run.Output, Does.Match($@"chat client: {want.Count} tokens, finish \w+, same text as the session: yes"));
        }
        finally
        {
            try { Directory.Delete(temp, recursive: true); } catch (IOException) { }
            // The extracted test version only (a unique version per run): leave the rest of the cache alone.
            try { Directory.Delete(Path.Combine(packages, "llama4native", version), recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    static (int Code, string Output) Run(string file, string[] args, string cwd, int timeoutSeconds)
    {
        var psi = new ProcessStartInfo(file) { WorkingDirectory = cwd, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        psi.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeoutSeconds * 1000))
        {
            p.Kill(entireProcessTree: true);
            return (-1, $"{file} {string.Join(' ', args)}: timed out after {timeoutSeconds} s\n{stdout.Result}{stderr.Result}");
        }
        return (p.ExitCode, stdout.Result + stderr.Result);
    }
}
