using System.Numerics.Tensors;

namespace Mamba.Compute.Cpu;

/// <summary>
/// The pure C# implementation of <see cref="IMambaBackend"/>: float32 storage and math, vectorised with AVX-512 or
/// AVX2 (kernels generic over the width, see <see cref="IVectorOps{TVec}"/>) and <see cref="TensorPrimitives"/>,
/// parallel over rows, channels and batch. It is the oracle every other backend is tested against (with float32
/// weights). With <see cref="CpuWeightFormat.Int8"/> or <see cref="CpuWeightFormat.BF16"/> the weights of the linear
/// layers and the embedding are stored narrow (<see cref="CpuPackedWeight"/>) and widened inside Linear and Embedding;
/// everything else stays float32.
/// </summary>
internal sealed partial class CpuBackend : IMambaBackend
{
    private readonly ParallelOptions _parallel;

    /// <summary>
    /// Creates the backend; <paramref name="threads"/> ≤ 0 uses every core. <paramref name="weights"/> is how weights
    /// uploaded through <see cref="UploadWeight"/> are stored.
    /// </summary>
    public CpuBackend(int threads = 0, CpuWeightFormat weights = CpuWeightFormat.F32)
    {
        if (!Enum.IsDefined(weights)) throw new ArgumentOutOfRangeException(nameof(weights), weights, "unknown CPU weight format");
        Threads = threads > 0 ? threads : Environment.ProcessorCount;
        WeightFormat = weights;
        _parallel = new ParallelOptions { MaxDegreeOfParallelism = Threads };
    }

    /// <summary>How linear and embedding weights are stored (float32 unless asked otherwise).</summary>
    public CpuWeightFormat WeightFormat { get; }

    /// <summary>Worker threads used by parallel ops.</summary>
    public int Threads { get; }

    /// <inheritdoc />
    public BackendKind Kind => BackendKind.Cpu;

    /// <inheritdoc />
    /// <remarks>Names the instruction set the kernels run with (AVX-512, AVX2 or scalar) and the thread count.</remarks>
    public string Description => WeightFormat == CpuWeightFormat.F32
        ? $"CPU (C#, float32, {CpuVectorWidth.InstructionSet}, {Threads} threads)"
        : $"CPU (C#, float32 activations, {WeightFormat.ToShortName()} weights{(WeightFormat == CpuWeightFormat.Int8 ? " (per-row scales)" : "")}, {CpuVectorWidth.InstructionSet}, {Threads} threads)";

    /// <inheritdoc />
    public DeviceTensor Allocate(DType dtype, params int[] shape)
    {
        RequireF32(dtype);
        long count = 1;
        foreach (var d in shape) count = checked(count * d);
        if (count > Array.MaxLength) throw new OutOfMemoryException($"tensor {string.Join("x", shape)} exceeds the largest array");
        return new CpuTensor(shape, new float[count]);
    }

    /// <inheritdoc />
    public DeviceTensor Upload(ReadOnlySpan<float> data, DType dtype, params int[] shape)
    {
        var tensor = (CpuTensor)Allocate(dtype, shape);
        if (data.Length != tensor.ElementCount)
            throw new ArgumentException($"{data.Length} values for shape {tensor.ShapeText}", nameof(data));
        data.CopyTo(tensor.Data);
        return tensor;
    }

    /// <summary>Wraps an existing array without copying (the tensor shares it).</summary>
    public CpuTensor Wrap(float[] data, params int[] shape) => new(shape, data);

    /// <inheritdoc />
    public DeviceTensor UploadOwned(float[] data, DType dtype, params int[] shape) => dtype == DType.F32 ? Wrap(data, shape) : Upload(data, dtype, shape);

    /// <inheritdoc />
    /// <remarks>With an Int8 or BF16 <see cref="WeightFormat"/>, a matrix becomes a <see cref="CpuPackedWeight"/>.</remarks>
    public DeviceTensor UploadWeight(float[] data, DType dtype, params int[] shape)
    {
        RequireF32(dtype);
        if (WeightFormat == CpuWeightFormat.F32 || shape.Length != 2) return UploadOwned(data, dtype, shape);
        return CpuPackedWeight.Create(data, WeightFormat, shape);
    }

    /// <inheritdoc />
    public void Download(DeviceTensor source, Span<float> destination)
    {
        if (source is CpuPackedWeight packed && !packed.IsDisposed)
        {
            if (destination.Length < packed.ElementCount)
                throw new ArgumentException($"destination holds {destination.Length}, tensor has {packed.ElementCount}", nameof(destination));
            packed.Widen(0, packed.Rows, destination);
            return;
        }
        var s = Cpu(source, nameof(source));
        if (destination.Length < s.ElementCount)
            throw new ArgumentException($"destination holds {destination.Length}, tensor has {s.ElementCount}", nameof(destination));
        s.Data.CopyTo(destination);
    }

    /// <inheritdoc />
    public void Copy(DeviceTensor source, DeviceTensor destination)
    {
        if (destination is CpuPackedWeight packed && !packed.IsDisposed)
        {
            var from = Cpu(source, nameof(source));
            if (from.ElementCount != packed.ElementCount)
                throw new ArgumentException($"destination {packed.ShapeText} differs from {from.ShapeText}", nameof(destination));
            packed.Store(from.Data); // converted again (LoRA merge into a narrow weight)
            return;
        }
        var s = Cpu(source, nameof(source));
        var d = Cpu(destination, nameof(destination));
        SameCount(s, d, nameof(destination));
        s.Data.CopyTo(d.Data, 0);
    }

    /// <inheritdoc />
    public void GatherRows(DeviceTensor source, ReadOnlySpan<int> rows, DeviceTensor destination)
    {
        var s = Cpu(source, nameof(source));
        var d = Cpu(destination, nameof(destination));
        int width = s.Dim(-1);
        long count = s.ElementCount / width;
        Expect(d, nameof(destination), rows.Length, width);
        for (int j = 0; j < rows.Length; j++)
        {
            if ((ulong)rows[j] >= (ulong)count) throw new ArgumentOutOfRangeException(nameof(rows), rows[j], $"row outside [0, {count})");
            Array.Copy(s.Data, (long)rows[j] * width, d.Data, (long)j * width, width);
        }
    }

    /// <inheritdoc />
    public void GatherLeading(DeviceTensor source, ReadOnlySpan<int> indices, DeviceTensor destination)
    {
        var s = Cpu(source, nameof(source));
        var d = Cpu(destination, nameof(destination));
        long width = LeadingGather.Check(s, indices, d);
        for (int j = 0; j < indices.Length; j++) Array.Copy(s.Data, indices[j] * width, d.Data, j * width, width);
    }

    /// <inheritdoc />
    public void Zero(DeviceTensor tensor) => Array.Clear(Cpu(tensor, nameof(tensor)).Data);

    /// <inheritdoc />
    public void Embedding(DeviceTensor table, ReadOnlySpan<int> ids, DeviceTensor output)
    {
        if (table is CpuPackedWeight packed && !packed.IsDisposed)
        {
            EmbeddingPacked(packed, ids, Cpu(output, nameof(output)));
            return;
        }
        var t = Cpu(table, nameof(table));
        var o = Cpu(output, nameof(output));
        int vocab = t.Dim(0), width = t.Dim(1);
        Expect(o, nameof(output), ids.Length, width);
        for (int m = 0; m < ids.Length; m++)
        {
            int id = ids[m];
            if ((uint)id >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(ids), id, $"token id at position {m} is outside the vocabulary [0, {vocab})");
            t.Data.AsSpan(id * width, width).CopyTo(o.Data.AsSpan(m * width, width));
        }
    }

    /// <inheritdoc />
    public void AddRmsNorm(DeviceTensor residual, DeviceTensor? delta, DeviceTensor weight, float epsilon, DeviceTensor output)
    {
        var r = Cpu(residual, nameof(residual));
        var w = Cpu(weight, nameof(weight));
        var o = Cpu(output, nameof(output));
        int width = w.Dim(0);
        int rows = (int)(r.ElementCount / width);
        Expect(r, nameof(residual), rows, width);
        Expect(o, nameof(output), rows, width);
        CpuTensor? dl = null;
        if (delta is not null)
        {
            dl = Cpu(delta, nameof(delta));
            Expect(dl, nameof(delta), rows, width);
        }
        void Row(int m)
        {
            var row = r.Data.AsSpan(m * width, width);
            if (dl is not null) TensorPrimitives.Add(row, dl.Data.AsSpan(m * width, width), row);
            float meanSquare = TensorPrimitives.SumOfSquares<float>(row) / width;
            float scale = 1f / MathF.Sqrt(meanSquare + epsilon);
            var dst = o.Data.AsSpan(m * width, width);
            // n = x·rsqrt(ms + ε) first, then w ⊙ n: the reference's rounding order.
            TensorPrimitives.Multiply(row, scale, dst);
            TensorPrimitives.Multiply(dst, w.Data, dst);
        }
        if ((long)rows * width < 1 << 15) for (int m = 0; m < rows; m++) Row(m);
        else
        {
            // Blocks of ~16 K values (a row's result does not depend on the split): a task per 768-wide row cost
            // about as much in scheduling as the row itself.
            int blockRows = Math.Max(1, (1 << 14) / width);
            Parallel.For(0, (rows + blockRows - 1) / blockRows, _parallel, i =>
            {
                for (int m = i * blockRows, end = Math.Min(rows, m + blockRows); m < end; m++) Row(m);
            });
        }
    }

    /// <inheritdoc />
    public void MaskRows(DeviceTensor x, DeviceTensor mask)
    {
        var t = Cpu(x, nameof(x));
        var mk = Cpu(mask, nameof(mask));
        int rows = (int)mk.ElementCount;
        if (rows == 0 || t.ElementCount % rows != 0)
            throw new ArgumentException($"mask {mk.ShapeText} does not match rows of {t.ShapeText}", nameof(mask));
        int width = (int)(t.ElementCount / rows);
        for (int m = 0; m < rows; m++)
            if (mk.Data[m] != 1f)
                TensorPrimitives.Multiply(t.Data.AsSpan(m * width, width), mk.Data[m], t.Data.AsSpan(m * width, width));
    }

    /// <inheritdoc />
    public void ScaleAdd(DeviceTensor x, float alpha, DeviceTensor y, float beta)
    {
        var xt = Cpu(x, nameof(x));
        var yt = Cpu(y, nameof(y));
        if (xt.ElementCount != yt.ElementCount)
            throw new ArgumentException($"x {xt.ShapeText} and y {yt.ShapeText} differ in size", nameof(y));
        var xs = xt.Data.AsSpan(0, (int)xt.ElementCount);
        var ys = yt.Data.AsSpan(0, (int)yt.ElementCount);
        if (beta == 0f) TensorPrimitives.Multiply(xs, alpha, ys);
        else for (int i = 0; i < ys.Length; i++) ys[i] = MathF.FusedMultiplyAdd(beta, ys[i], alpha * xs[i]);
    }

    /// <inheritdoc />
    public void Linear(DeviceTensor x, DeviceTensor weight, DeviceTensor? bias, DeviceTensor y)
    {
        var xt = Cpu(x, nameof(x));
        var yt = Cpu(y, nameof(y));
        if (weight is CpuPackedWeight packed && !packed.IsDisposed)
        {
            LinearPacked(xt, packed, bias, yt);
            return;
        }
        var w = Cpu(weight, nameof(weight));
        int n = w.Dim(0), k = w.Dim(1);
        if (xt.ElementCount % k != 0)
            throw new ArgumentException($"x {xt.ShapeText} has no rows of width {k} for weight {w.ShapeText}", nameof(x));
        int m = (int)(xt.ElementCount / k);
        Expect(yt, nameof(y), m, n);
        ReadOnlySpan<float> b = default;
        if (bias is not null)
        {
            var bt = Cpu(bias, nameof(bias));
            if (bt.ElementCount != n) throw new ArgumentException($"bias {bt.ShapeText} does not match {n} outputs", nameof(bias));
            b = bt.Data;
        }
        CpuGemm.Linear(xt.Data, k, w.Data, b, yt.Data, m, n, k, _parallel);
    }

    /// <inheritdoc />
    public void CausalConv1d(DeviceTensor xz, DeviceTensor weight, DeviceTensor? bias, DeviceTensor? mask, DeviceTensor u, DeviceTensor? convState)
    {
        var (batch, length, inner, kernel, w, ut) = ConvShapes(xz, weight, u);
        var maskData = mask is null ? default : (ReadOnlySpan<float>)Cpu(mask, nameof(mask)).Data;
        if (mask is not null && maskData.Length != batch * length)
            throw new ArgumentException($"mask {mask.ShapeText} is not [{batch}, {length}]", nameof(mask));
        var biasData = BiasOf(bias, inner);
        using var weightT = Transpose(w.Data, inner, kernel);
        CpuCausalConv1d.Forward(Cpu(xz, nameof(xz)).Data, weightT.Span, biasData, maskData, ut.Data, default,
            batch, length, inner, kernel, _parallel);
        if (convState is not null)
        {
            var st = Cpu(convState, nameof(convState));
            Expect(st, nameof(convState), batch * inner, kernel);
            var x = Cpu(xz, nameof(xz)).Data;
            // Last K inputs of the conv per channel, zero-padded on the left when L < K.
            for (int b = 0; b < batch; b++)
                for (int e = 0; e < inner; e++)
                    for (int k = 0; k < kernel; k++)
                    {
                        int time = length - kernel + k;
                        st.Data[((long)b * inner + e) * kernel + k] = time >= 0 ? x[((long)b * length + time) * 2 * inner + e] : 0f;
                    }
        }
    }

    /// <inheritdoc />
    public void CausalConv1dStep(DeviceTensor xz, DeviceTensor weight, DeviceTensor? bias, DeviceTensor convState, DeviceTensor u)
    {
        var x = Cpu(xz, nameof(xz));
        var w = Cpu(weight, nameof(weight));
        var st = Cpu(convState, nameof(convState));
        var ut = Cpu(u, nameof(u));
        int inner = ut.Dim(-1);
        int batch = (int)(ut.ElementCount / inner);
        int kernel = w.Dim(-1);
        Expect(x, nameof(xz), batch, 2 * inner);
        Expect(st, nameof(convState), batch * inner, kernel);
        if (w.ElementCount != (long)inner * kernel) throw new ArgumentException($"weight {w.ShapeText} is not [{inner}, {kernel}]", nameof(weight));
        var biasData = BiasOf(bias, inner);
        var state = st.Data;
        var wd = w.Data;
        for (int b = 0; b < batch; b++)
        {
            var outRow = ut.Data.AsSpan(b * inner, inner);
            for (int e = 0; e < inner; e++)
            {
                int at = (b * inner + e) * kernel;
                float acc = biasData.Length > 0 ? biasData[e] : 0f;
                for (int k = 0; k < kernel - 1; k++)
                {
                    float v = state[at + k + 1];
                    state[at + k] = v;
                    acc += wd[e * kernel + k] * v;
                }
                float input = x.Data[b * 2 * inner + e];
                state[at + kernel - 1] = input;
                outRow[e] = acc + wd[e * kernel + kernel - 1] * input;
            }
            CpuMath.SiluInPlace(outRow);
        }
    }

    /// <inheritdoc />
    public void SelectiveScan(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor y, DeviceTensor? ssmState,
        DeviceTensor? checkpoints = null)
    {
        NoCheckpoints(checkpoints);
        Scan(ssm, u, dbc, xz, y, ssmState, useInitialState: false, step: false);
    }

    /// <inheritdoc />
    public int[]? ScanCheckpointShape(int batch, int length, int inner, int state) => null;

    private static void NoCheckpoints(DeviceTensor? checkpoints)
    {
        if (checkpoints is not null)
            throw new ArgumentException("the CPU backend saves no scan checkpoints (its ScanCheckpointShape is null)", nameof(checkpoints));
    }

    /// <inheritdoc />
    public void SelectiveStateStep(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor ssmState, DeviceTensor y) =>
        Scan(ssm, u, dbc, xz, y, ssmState, useInitialState: true, step: true);

    /// <inheritdoc />
    public void SelectiveScanContinue(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor y, DeviceTensor ssmState) =>
        Scan(ssm, u, dbc, xz, y, ssmState, useInitialState: true, step: false);

    /// <inheritdoc />
    public void CausalConv1dContinue(DeviceTensor xz, DeviceTensor weight, DeviceTensor? bias, DeviceTensor u, DeviceTensor convState)
    {
        var (batch, length, inner, kernel, w, ut) = ConvShapes(xz, weight, u);
        var st = Cpu(convState, nameof(convState));
        Expect(st, nameof(convState), batch * inner, kernel);
        // History [B, K−1, E] (token-major) from the state's last K−1 columns.
        var history = new float[(long)batch * (kernel - 1) * inner];
        for (int b = 0; b < batch; b++)
            for (int e = 0; e < inner; e++)
                for (int j = 0; j < kernel - 1; j++)
                    history[((long)b * (kernel - 1) + j) * inner + e] = st.Data[((long)b * inner + e) * kernel + 1 + j];
        var x = Cpu(xz, nameof(xz)).Data;
        using (var weightT = Transpose(w.Data, inner, kernel))
            CpuCausalConv1d.Forward(x, weightT.Span, BiasOf(bias, inner), default, ut.Data, history, batch, length, inner, kernel, _parallel);
        // New state: the last K inputs of [history, x].
        for (int b = 0; b < batch; b++)
            for (int e = 0; e < inner; e++)
                for (int k = 0; k < kernel; k++)
                {
                    int time = length - kernel + k;
                    st.Data[((long)b * inner + e) * kernel + k] = time >= 0
                        ? x[((long)b * length + time) * 2 * inner + e]
                        : history[((long)b * (kernel - 1) + (kernel - 1 + time)) * inner + e];
                }
    }

    private void Scan(SsmParameters ssm, DeviceTensor u, DeviceTensor dbc, DeviceTensor xz, DeviceTensor y, DeviceTensor? ssmState, bool useInitialState, bool step)
    {
        var a = Cpu(ssm.A, "ssm.A");
        var wdt = Cpu(ssm.DtProjWeight, "ssm.DtProjWeight");
        int inner = a.Dim(0), n = a.Dim(1), rank = wdt.Dim(1);
        var ut = Cpu(u, nameof(u));
        int rows = (int)(ut.ElementCount / Math.Max(1, inner));
        Expect(ut, nameof(u), rows, inner);
        var dbcT = Cpu(dbc, nameof(dbc));
        Expect(dbcT, nameof(dbc), rows, rank + 2 * n);
        Expect(Cpu(xz, nameof(xz)), nameof(xz), rows, 2 * inner);
        var yt = Cpu(y, nameof(y));
        Expect(yt, nameof(y), rows, inner);
        Expect(wdt, "ssm.DtProjWeight", inner, rank);
        Expect(Cpu(ssm.DtProjBias, "ssm.DtProjBias"), "ssm.DtProjBias", 1, inner);
        int batch, length;
        if (step) { batch = rows; length = 1; }
        else { batch = u.Shape.Length == 3 ? u.Dim(0) : 1; length = rows / batch; }
        Span<float> state = default;
        if (ssmState is not null)
        {
            var st = Cpu(ssmState, nameof(ssmState));
            Expect(st, nameof(ssmState), batch * inner, n);
            state = st.Data;
        }
        if (step)
        {
            // Decode: Δ, the state update and the gate fused per channel block, one parallel loop.
            CpuSelectiveScan.Step(ut.Data, dbcT.Data, Cpu(xz, nameof(xz)).Data, wdt.Data, Cpu(ssm.DtProjBias, "ssm.DtProjBias").Data,
                a.Data, Cpu(ssm.D, "ssm.D").Data, yt.Data, state, batch, inner, rank, n, _parallel);
            return;
        }
        // Δ = softplus(δ̃·W_dtᵀ + b_dt) is computed inside the scan, per step and channel group.
        CpuSelectiveScan.Run(ut.Data, dbcT.Data, wdt.Data, Cpu(ssm.DtProjBias, "ssm.DtProjBias").Data, Cpu(xz, nameof(xz)).Data, a.Data,
            Cpu(ssm.D, "ssm.D").Data, yt.Data, state, useInitialState, batch, length, inner, rank, n, _parallel);
    }

    /// <inheritdoc />
    public void ArgMax(DeviceTensor logits, Span<int> result)
    {
        var l = Cpu(logits, nameof(logits));
        int vocab = l.Dim(-1);
        int rows = (int)(l.ElementCount / vocab);
        if (result.Length < rows) throw new ArgumentException($"result holds {result.Length}, need {rows}", nameof(result));
        for (int m = 0; m < rows; m++)
            result[m] = ArgMaxRow(l.Data.AsSpan(m * vocab, vocab));
    }

    /// <summary>The library's one argmax rule (<see cref="Mamba.Generation.ArgMaxRule"/>): −1 for a row with no non-NaN value.</summary>
    internal static int ArgMaxRow(ReadOnlySpan<float> row) => Mamba.Generation.ArgMaxRule.Of(row);

    /// <inheritdoc />
    public double CrossEntropySum(DeviceTensor logits, ReadOnlySpan<int> targets, int ignoreIndex, out int count)
    {
        var l = Cpu(logits, nameof(logits));
        int vocab = l.Dim(-1);
        int rows = (int)(l.ElementCount / vocab);
        if (targets.Length != rows) throw new ArgumentException($"{targets.Length} targets for {rows} rows", nameof(targets));
        double sum = 0;
        count = 0;
        for (int m = 0; m < rows; m++)
        {
            int target = targets[m];
            if (target == ignoreIndex) continue;
            if ((uint)target >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(targets), target, $"target at row {m} is outside [0, {vocab})");
            var row = l.Data.AsSpan(m * vocab, vocab);
            double max = TensorPrimitives.Max<float>(row);
            double total = 0;
            foreach (var v in row) total += Math.Exp(v - max);
            sum += max + Math.Log(total) - row[target];
            count++;
        }
        return sum;
    }

    /// <inheritdoc />
    public void Synchronize() { }

    /// <inheritdoc />
    public void Dispose() { }

    /// <summary>
    /// source [rows, cols] transposed into a pooled buffer (A is E × N floats per layer and call: a fresh array of
    /// that size would land on the large-object heap on every decode step). Dispose returns it.
    /// </summary>
    private static PooledArray Transpose(float[] source, int rows, int cols)
    {
        var result = new PooledArray(source.Length);
        var span = result.Span;
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                span[c * rows + r] = source[r * cols + c];
        return result;
    }

    private readonly struct PooledArray(int length) : IDisposable
    {
        private readonly float[] _array = System.Buffers.ArrayPool<float>.Shared.Rent(length);

        public Span<float> Span => _array.AsSpan(0, length);

        public void Dispose() => System.Buffers.ArrayPool<float>.Shared.Return(_array);
    }

    /// <summary>The checks shared by the conv forms: xz [B, L, 2E], weight [E, K], u [B, L, E].</summary>
    private static (int Batch, int Length, int Inner, int Kernel, CpuTensor Weight, CpuTensor U) ConvShapes(DeviceTensor xz, DeviceTensor weight, DeviceTensor u)
    {
        var (batch, length, inner) = Dims3(xz, nameof(xz), half: true);
        var w = Cpu(weight, nameof(weight));
        int kernel = w.Dim(-1);
        if (w.ElementCount != (long)inner * kernel) throw new ArgumentException($"weight {w.ShapeText} is not [{inner}, K]", nameof(weight));
        var ut = Cpu(u, nameof(u));
        Expect(ut, nameof(u), batch * length, inner);
        return (batch, length, inner, kernel, w, ut);
    }

    private static ReadOnlySpan<float> BiasOf(DeviceTensor? bias, int size)
    {
        if (bias is null) return default;
        var b = Cpu(bias, nameof(bias));
        if (b.ElementCount != size) throw new ArgumentException($"bias {b.ShapeText} is not [{size}]", nameof(bias));
        return b.Data;
    }

    private static (int Batch, int Length, int Inner) Dims3(DeviceTensor t, string name, bool half)
    {
        if (t.Shape.Length != 3) throw new ArgumentException($"{name} must be [B, L, C], got {t.ShapeText}", name);
        int c = t.Dim(2);
        if (half && c % 2 != 0) throw new ArgumentException($"{name} must have an even last dimension (x and z), got {t.ShapeText}", name);
        return (t.Dim(0), t.Dim(1), half ? c / 2 : c);
    }

    private static CpuTensor Cpu(DeviceTensor tensor, string name)
    {
        ArgumentNullException.ThrowIfNull(tensor, name);
        ObjectDisposedException.ThrowIf(tensor.IsDisposed, tensor);
        if (tensor is CpuPackedWeight packed)
            throw new ArgumentException($"{name} is a weight stored as {packed.Format.ToShortName()} (CPU weight-only storage): only Linear, " +
                "Embedding, Download and Copy into it read it; training and other ops need float32 weights (load with CpuWeightFormat.F32)", name);
        return tensor as CpuTensor ?? throw new ArgumentException($"{name} lives on another backend ({tensor.GetType().Name})", name);
    }

    private static void Expect(CpuTensor t, string name, long rows, long cols)
    {
        if (t.ElementCount != rows * cols)
            throw new ArgumentException($"{name} {t.ShapeText} does not hold {rows} rows of {cols}", name);
    }

    private static void SameCount(CpuTensor a, CpuTensor b, string name)
    {
        if (a.ElementCount != b.ElementCount) throw new ArgumentException($"{name} {b.ShapeText} differs from {a.ShapeText}", name);
    }

    private static void RequireF32(DType dtype)
    {
        if (dtype != DType.F32)
            throw new NotSupportedException($"the CPU backend computes in float32 only (asked for {dtype.ToShortName()}); weights stored as bf16/f16 are upcast on load");
    }
}
