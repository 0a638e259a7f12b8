using System.Runtime.CompilerServices;

// Every native signature in this assembly is blittable (ints, pointers, handle structs that wrap one),
// so the runtime never marshals: what the C# signature says is exactly what crosses the boundary.
// LibraryImport's generator still handles the few `string` (UTF-8) parameters.
[assembly: DisableRuntimeMarshalling]
