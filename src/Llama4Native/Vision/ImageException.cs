namespace Llama4Native.Vision;

/// <summary>
/// An image that cannot be used: unknown format, corrupt or truncated data, a zero or too large declared size.
/// The message names the source (file name, or "image #k"), the problem and what to do. Decoding hostile bytes
/// must end in this exception (or an image) and nothing else. Derives from <see cref="Exception"/> like
/// CheckpointException, its sibling for bad model files (InvalidDataException is sealed).
/// </summary>
public sealed class ImageException : Exception
{
    /// <summary>Where the image came from: a file name or "image #k".</summary>
    public string ImageSource { get; }

    internal ImageException(string source, string problem, Exception? inner = null) : base($"{source}: {problem}", inner)
    {
        ImageSource = source;
    }
}
