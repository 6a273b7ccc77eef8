namespace Mamba.Model;

/// <summary>A read-only set of named float tensors (a safetensors checkpoint, a torch pickle, memory).</summary>
public interface ICheckpointSource : IDisposable
{
    /// <summary>Where the tensors come from (a file or folder), for error messages.</summary>
    string SourcePath { get; }

    /// <summary>Every tensor name.</summary>
    IReadOnlyCollection<string> TensorNames { get; }

    /// <summary>Shape of a tensor.</summary>
    long[] GetShape(string name);

    /// <summary>Storage dtype of a tensor ("F32", "BF16", "F16", ...).</summary>
    string GetDType(string name);

    /// <summary>The tensor upcast to float32.</summary>
    float[] ReadFloat32(string name);
}
