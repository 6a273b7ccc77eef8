namespace Mamba.Compute.Cpu;

/// <summary>
/// Backward of the selective scan with the Δ projection and the gate fused in (mamba-spec §12.4), from a zero state.
/// Work is split into fixed blocks of <see cref="ChannelBlock"/> channels; a block's task takes its channels one by
/// one and, per channel, every batch row in order: the forward is recomputed into a buffer of L × N states (memory
/// linear in L, never L × E × N), then the reverse scan of the adjoint λ_t = g y_t·C_t + exp(Δ_{t+1}A)⊙λ_{t+1} gives
/// g u, g z, g p (= g Δr) and the channel's g A, g D, g b_dt. The sums over channels are made in a fixed order:
/// g B and g C per block into their own rows, then added over blocks in block order; g δ̃ = g p·W_dt and
/// g W_dt += g pᵀ·δ̃ are GEMMs (<see cref="CpuLinearBackward"/>). Same bits for any thread count.
/// </summary>
internal static class CpuSelectiveScanBackward
{
    /// <summary>Channels per task; each block keeps [B·L, 2N] partial sums of g B, g C.</summary>
    private const int ChannelBlock = 32;

    /// <param name="u">[B, L, E]</param>
    /// <param name="dbc">[B, L, R+2N]</param>
    /// <param name="wdt">[E, R]</param>
    /// <param name="bdt">[E]</param>
    /// <param name="xz">[B, L, 2E]; z at columns E..</param>
    /// <param name="aNeg">[E, N], A = −exp(A_log)</param>
    /// <param name="d">[E]</param>
    /// <param name="gradY">[B, L, E]</param>
    /// <param name="gradU">[B, L, E], overwritten</param>
    /// <param name="gradDbc">[B, L, R+2N], overwritten</param>
    /// <param name="gradXz">[B, L, 2E], columns E.. overwritten</param>
    /// <param name="gradWdt">[E, R], added to</param>
    /// <param name="gradBdt">[E], added to</param>
    /// <param name="gradALog">[E, N], added to (g A ⊙ A)</param>
    /// <param name="gradD">[E], added to</param>
    public static void Run(float[] u, float[] dbc, float[] wdt, float[] bdt, float[] xz, float[] aNeg, float[] d, float[] gradY,
        float[] gradU, float[] gradDbc, float[] gradXz, float[] gradWdt, float[] gradBdt, float[] gradALog, float[] gradD,
        int batch, int length, int inner, int rank, int n, ParallelOptions parallel)
    {
        int rows = batch * length, dbcWidth = rank + 2 * n;
        int blocks = (inner + ChannelBlock - 1) / ChannelBlock;
        var gradP = new float[(long)rows * inner];
        var partial = new float[(long)blocks * rows * 2 * n];

        void Block(int block)
        {
            int e0 = block * ChannelBlock, e1 = Math.Min(inner, e0 + ChannelBlock);
            var states = new float[(long)length * n];
            var p = new float[length];
            var delta = new float[length];
            var yPre = new float[length];
            var lambda = new float[n];
            var decayNext = new float[n];
            var gradA = new float[n];
            long partialBase = (long)block * rows * 2 * n;
            for (int e = e0; e < e1; e++)
            {
                Array.Clear(gradA);
                float gradDe = 0f, gradBias = 0f;
                int wOff = e * rank, aOff = e * n;
                for (int b = 0; b < batch; b++)
                {
                    // Forward, keeping every state of this channel.
                    for (int t = 0; t < length; t++)
                    {
                        long row = (long)b * length + t;
                        long dOff = row * dbcWidth;
                        float raw = 0f;
                        for (int r = 0; r < rank; r++) raw = MathF.FusedMultiplyAdd(dbc[dOff + r], wdt[wOff + r], raw);
                        float pt = raw + bdt[e];
                        float dt = CpuMath.Softplus(pt);
                        p[t] = pt;
                        delta[t] = dt;
                        float uu = u[row * inner + e], du = dt * uu, acc = 0f;
                        long bOff = dOff + rank, cOff = bOff + n, sOff = (long)t * n;
                        for (int j = 0; j < n; j++)
                        {
                            float previous = t > 0 ? states[sOff - n + j] : 0f;
                            float s = MathF.Exp(dt * aNeg[aOff + j]) * previous + du * dbc[bOff + j];
                            states[sOff + j] = s;
                            acc += s * dbc[cOff + j];
                        }
                        yPre[t] = acc + d[e] * uu;
                    }
                    // Reverse: the adjoint λ and every gradient of this channel.
                    Array.Clear(lambda);
                    Array.Clear(decayNext);
                    for (int t = length - 1; t >= 0; t--)
                    {
                        long row = (long)b * length + t;
                        long dOff = row * dbcWidth, bOff = dOff + rank, cOff = bOff + n, sOff = (long)t * n;
                        long zAt = row * 2 * inner + inner + e;
                        float z = xz[zAt], sig = CpuMath.Sigmoid(z), go = gradY[row * inner + e];
                        gradXz[zAt] = go * yPre[t] * (sig * (1f + z * (1f - sig)));
                        float gy = go * (z * sig);
                        float dt = delta[t], uu = u[row * inner + e];
                        float gu = gy * d[e], gDelta = 0f;
                        gradDe += gy * uu;
                        long pOff = partialBase + row * 2 * n;
                        for (int j = 0; j < n; j++)
                        {
                            float a = aNeg[aOff + j];
                            float lam = gy * dbc[cOff + j] + decayNext[j] * lambda[j];
                            float decay = MathF.Exp(dt * a);
                            float previous = t > 0 ? states[sOff - n + j] : 0f;
                            float bj = dbc[bOff + j];
                            partial[pOff + j] += lam * dt * uu;
                            partial[pOff + n + j] += gy * states[sOff + j];
                            gu += lam * dt * bj;
                            float decayTerm = a * decay * previous;
                            gDelta += lam * (bj * uu + decayTerm);
                            gradA[j] += lam * dt * decay * previous;
                            lambda[j] = lam;
                            decayNext[j] = decay;
                        }
                        gradU[row * inner + e] = gu;
                        float gp = p[t] <= CpuMath.SoftplusThreshold ? gDelta * CpuMath.Sigmoid(p[t]) : gDelta;
                        gradP[row * inner + e] = gp;
                        gradBias += gp;
                    }
                }
                for (int j = 0; j < n; j++) gradALog[aOff + j] += gradA[j] * aNeg[aOff + j];
                gradD[e] += gradDe;
                gradBdt[e] += gradBias;
            }
        }

        if (blocks == 1 || (long)rows * inner * n < 1 << 14)
            for (int block = 0; block < blocks; block++) Block(block);
        else
            Parallel.For(0, blocks, parallel, Block);

        // g B, g C: the blocks' partial sums in block order.
        void Reduce(int row)
        {
            long at = (long)row * dbcWidth + rank;
            for (int c = 0; c < 2 * n; c++)
            {
                float sum = 0f;
                for (int block = 0; block < blocks; block++) sum += partial[((long)block * rows + row) * 2 * n + c];
                gradDbc[at + c] = sum;
            }
        }
        if ((long)rows * blocks * n < 1 << 15) for (int row = 0; row < rows; row++) Reduce(row);
        else Parallel.For(0, rows, parallel, Reduce);

        // g δ̃ = g p·W_dt, into the first R columns of gradDbc; g W_dt += g pᵀ·δ̃.
        if (rank > 0)
        {
            var gradDt = new float[(long)rows * rank];
            CpuLinearBackward.InputGradient(gradP, wdt, gradDt, accumulate: false, rows, inner, rank, parallel);
            for (int row = 0; row < rows; row++) Array.Copy(gradDt, (long)row * rank, gradDbc, (long)row * dbcWidth, rank);
            CpuLinearBackward.AddWeightGradient(gradP, dbc, dbcWidth, gradWdt, rows, inner, rank, parallel);
        }
    }
}
