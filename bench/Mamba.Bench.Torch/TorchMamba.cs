using Mamba.Model;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace Mamba.Bench.Torch;

/// <summary>
/// The same Mamba-1 forward (spec §5, §8.3) written with TorchSharp on libtorch's CPU kernels, float32,
/// with the weights of a <see cref="MambaWeights"/>. Prefill uses conv1d with groups = E and a selective scan
/// that is a loop over time with vectorised ops over [B, E, N]; decode uses the cached conv/ssm states.
/// </summary>
internal sealed class TorchMamba : IDisposable
{
    /// <summary>How the prefill scan is written.</summary>
    public enum ScanKind
    {
        /// <summary>transformers' <c>MambaMixer.slow_forward</c>: dA, dB·u materialised as [B, E, L, N], then per step
        /// <c>s = dA[:, :, t] * s + dBu[:, :, t]</c> and <c>y_t = s @ C_t</c>, stacked.</summary>
        HfSlow,
        /// <summary>The same loop tuned: dA, dB·u laid out [L, B, E, N] (contiguous per step), the state
        /// computed in place into the dB·u buffer with one <c>addcmul_</c> per step, one batched readout.</summary>
        InPlace,
    }

    private sealed record Layer(Tensor Norm, Tensor InProj, Tensor ConvW, Tensor ConvB, Tensor XProj,
        Tensor DtProjW, Tensor DtProjB, Tensor A, Tensor D, Tensor OutProj);

    private readonly Layer[] _layers;
    private readonly Tensor _emb, _normF;
    private readonly int _d, _e, _n, _r, _k;
    private readonly double _eps;
    private readonly ScalarType _dtype;
    internal static readonly Scalar One = 1.0f.ToScalar();

    public TorchMamba(MambaWeights w, ScalarType dtype = ScalarType.Float32)
    {
        _dtype = dtype;
        var c = w.Config;
        _d = c.HiddenSize; _e = c.IntermediateSize; _n = c.StateSize; _r = c.TimeStepRank; _k = c.ConvKernel;
        _eps = c.LayerNormEpsilon;
        if (c.UseBias) throw new NotSupportedException("use_bias models are not covered by this benchmark");
        Tensor T(float[] data, params long[] shape) => torch.tensor(data, shape, dtype: ScalarType.Float32).to_type(dtype).contiguous();
        _emb = T(w[ParameterId.Embeddings], c.VocabSize, _d);
        _normF = T(w[ParameterId.NormF], _d);
        _layers = Enumerable.Range(0, c.NumHiddenLayers).Select(i => new Layer(
            T(w[ParameterId.Norm, i], _d),
            T(w[ParameterId.InProjWeight, i], 2 * _e, _d),
            T(w[ParameterId.ConvWeight, i], _e, 1, _k),
            w.Values.TryGet(ParameterId.ConvBias, i) is { } convBias ? T(convBias, _e) : torch.zeros(_e, dtype: dtype),
            T(w[ParameterId.XProjWeight, i], _r + 2 * _n, _e),
            T(w[ParameterId.DtProjWeight, i], _e, _r),
            T(w[ParameterId.DtProjBias, i], _e),
            (-T(w[ParameterId.ALog, i], _e, _n).exp()).contiguous(),
            T(w[ParameterId.D, i], _e),
            T(w[ParameterId.OutProjWeight, i], _d, _e))).ToArray();
    }

    /// <summary>Per-layer decode state: conv [B, E, K], ssm [B, E, N] (fp32).</summary>
    public sealed class Cache : IDisposable
    {
        public required Tensor[] Conv { get; init; }
        public required Tensor[] Ssm { get; init; }
        public void Dispose()
        {
            foreach (var t in Conv) t.Dispose();
            foreach (var t in Ssm) t.Dispose();
        }
    }

    private Tensor RmsNorm(Tensor x, Tensor w)
    {
        var ms = x.square().mean([-1L], keepdim: true);
        return x * (ms + _eps).rsqrt() * w;
    }

    /// <summary>
    /// Full-sequence forward of ids [B, L] starting from zero state. Returns logits [B, L_keep, V] for the last
    /// <paramref name="keepLast"/> positions (0 = all) and fills <paramref name="cache"/> when given.
    /// </summary>
    public Tensor Prefill(long[,] ids, int keepLast, out Cache cache, ScanKind scan = ScanKind.InPlace)
    {
        int b = ids.GetLength(0), L = ids.GetLength(1);
        var conv = new Tensor[_layers.Length];
        var ssm = new Tensor[_layers.Length];
        Tensor logits;
        using (var scope = torch.NewDisposeScope())
        {
            var idt = torch.tensor(ids.Cast<long>().ToArray(), new long[] { b, L }, dtype: ScalarType.Int64);
            var h = _emb.index_select(0, idt.view(-1)).view(b, L, _d);   // residual stream [B, L, d]
            for (int i = 0; i < _layers.Length; i++)
            {
                // One scope per layer: the layer's [L, B, E, N] temporaries are freed before the next layer runs.
                using var layerScope = torch.NewDisposeScope();
                var p = _layers[i];
                var a = RmsNorm(h, p.Norm);
                var xz = F.linear(a, p.InProj);                                  // [B, L, 2E]
                var x = xz.narrow(-1, 0, _e).transpose(1, 2).contiguous();       // [B, E, L]
                var z = xz.narrow(-1, _e, _e).transpose(1, 2);                   // [B, E, L]
                // conv_state = last K columns of x, left-padded with zeros.
                conv[i] = (L >= _k ? x.narrow(2, L - _k, _k) : F.pad(x, [_k - L, 0])).clone().DetachFromDisposeScope();
                var u = F.silu(F.conv1d(x, p.ConvW, p.ConvB, padding: _k - 1, groups: _e).narrow(2, 0, L)); // [B, E, L]
                var dbc = F.linear(u.transpose(1, 2), p.XProj);                  // [B, L, R+2N]
                var dt = dbc.narrow(-1, 0, _r);
                var bs = dbc.narrow(-1, _r, _n);                                 // [B, L, N]
                var cs = dbc.narrow(-1, _r + _n, _n);                            // [B, L, N]
                var delta = F.softplus(F.linear(dt, p.DtProjW, p.DtProjB));      // [B, L, E]
                Tensor y, state;
                if (scan == ScanKind.HfSlow)
                {
                    var dT = delta.transpose(1, 2);                                                   // [B, E, L]
                    var dA = (p.A.unsqueeze(0).unsqueeze(2) * dT.unsqueeze(-1)).exp();                // [B, E, L, N]
                    var dBu = dT.unsqueeze(-1) * bs.unsqueeze(1) * u.unsqueeze(-1);                  // [B, E, L, N]
                    state = torch.zeros(b, _e, _n, dtype: _dtype);
                    var outs = new List<Tensor>(L);
                    for (int t = 0; t < L; t++)
                    {
                        state = dA.select(2, t) * state + dBu.select(2, t);                          // [B, E, N]
                        outs.Add(torch.matmul(state, cs.select(1, t).unsqueeze(-1)));                // [B, E, 1]
                    }
                    y = torch.cat(outs, -1);                                                          // [B, E, L]
                }
                else
                {
                    var uT = u.transpose(1, 2);                                                       // [B, L, E]
                    var dA = (delta.unsqueeze(-1) * p.A).exp_().permute(1, 0, 2, 3).contiguous();     // [L, B, E, N]
                    var hs = ((delta * uT).unsqueeze(-1) * bs.unsqueeze(2)).permute(1, 0, 2, 3).contiguous(); // [L, B, E, N]
                    for (int t = 1; t < L; t++)
                        hs[t].addcmul_(dA[t], hs[t - 1], One);                                             // s_t = dA_t ⊙ s_{t−1} + dBu_t
                    state = hs[L - 1];
                    // y[b, e, t] = Σ_n s[t, b, e, n] · C[b, t, n]
                    y = torch.einsum("lben,bln->bel", hs, cs);
                }
                ssm[i] = state.clone().DetachFromDisposeScope();   // a copy: state may be a view of the [L, B, E, N] buffer
                y = (y + u * p.D.unsqueeze(-1)) * F.silu(z);                                          // [B, E, L]
                h = (h + F.linear(y.transpose(1, 2), p.OutProj)).MoveToOuterDisposeScope();
            }
            if (keepLast > 0 && keepLast < L) h = h.narrow(1, L - keepLast, keepLast);
            logits = F.linear(RmsNorm(h, _normF), _emb).MoveToOuterDisposeScope();
        }
        cache = new Cache { Conv = conv, Ssm = ssm };
        return logits;
    }

    /// <summary>One decode step for ids [B] on a filled cache (states updated in place); returns logits [B, V].</summary>
    public Tensor Step(long[] ids, Cache cache)
    {
        int b = ids.Length;
        using var scope = torch.NewDisposeScope();
        var h = _emb.index_select(0, torch.tensor(ids, dtype: ScalarType.Int64));          // [B, d]
        for (int i = 0; i < _layers.Length; i++)
        {
            var p = _layers[i];
            var a = RmsNorm(h, p.Norm);
            var xz = F.linear(a, p.InProj);                                                 // [B, 2E]
            var x = xz.narrow(-1, 0, _e);
            var z = xz.narrow(-1, _e, _e);
            var cs = cache.Conv[i];                                                         // [B, E, K]
            cs.copy_(cs.roll(-1, -1));
            cs.select(2, _k - 1).copy_(x);
            var u = F.silu((cs * p.ConvW.squeeze(1)).sum(-1) + p.ConvB);                    // [B, E]
            var dbc = F.linear(u, p.XProj);
            var dt = dbc.narrow(-1, 0, _r);
            var bs = dbc.narrow(-1, _r, _n);
            var cc = dbc.narrow(-1, _r + _n, _n);
            var delta = F.softplus(F.linear(dt, p.DtProjW, p.DtProjB));                     // [B, E]
            var s = cache.Ssm[i];                                                           // [B, E, N]
            var dA = (delta.unsqueeze(-1) * p.A).exp_();
            s.mul_(dA).add_((delta * u).unsqueeze(-1) * bs.unsqueeze(1));
            var y = torch.matmul(s, cc.unsqueeze(-1)).squeeze(-1) + p.D * u;                // [B, E]
            y = y * F.silu(z);
            h = h + F.linear(y, p.OutProj);
        }
        return F.linear(RmsNorm(h, _normF), _emb).MoveToOuterDisposeScope();
    }

    public void Dispose()
    {
        _emb.Dispose();
        _normF.Dispose();
        foreach (var l in _layers)
            foreach (var t in new[] { l.Norm, l.InProj, l.ConvW, l.ConvB, l.XProj, l.DtProjW, l.DtProjB, l.A, l.D, l.OutProj }) t.Dispose();
    }
}
