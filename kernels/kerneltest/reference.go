package kerneltest

import (
	"math"

	"github.com/peertune/peertune/kernels"
)

// The float64 reference of every op, written as plainly as the contract in
// kernels.go states it: obvious loops, no blocking, no fusion, no cleverness,
// so that a reader can check each line against the formula. The references
// allocate and return their results (nothing accumulates here; the checks add
// pre-fill values themselves). Their backwards are checked against finite
// differences of their forwards in reference_test.go.

// refEmbedding: out[i,:] = table[tokens[i],:].
func refEmbedding(table []float64, tokens []int32, dim int) []float64 {
	out := make([]float64, len(tokens)*dim)
	for i, tok := range tokens {
		for j := 0; j < dim; j++ {
			out[i*dim+j] = table[int(tok)*dim+j]
		}
	}
	return out
}

// refEmbeddingBackward: dTable[tokens[i],:] += dOut[i,:].
func refEmbeddingBackward(dOut []float64, tokens []int32, vocab, dim int) []float64 {
	dTable := make([]float64, vocab*dim)
	for i, tok := range tokens {
		for j := 0; j < dim; j++ {
			dTable[int(tok)*dim+j] += dOut[i*dim+j]
		}
	}
	return dTable
}

// refMatmul: out[i,j] = beta*out0[i,j] + scale * Σ_p in[i,p]·w[j,p] (+ bias[j]).
func refMatmul(out0, in, w, bias []float64, m, k, n int, scale float64, accumulate bool) []float64 {
	out := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			s := 0.0
			for p := 0; p < k; p++ {
				s += in[i*k+p] * w[j*k+p]
			}
			v := scale * s
			if bias != nil {
				v += bias[j]
			}
			if accumulate {
				v += out0[i*n+j]
			}
			out[i*n+j] = v
		}
	}
	return out
}

// refMatmulBackward for out = scale * in·wᵀ + bias:
// dIn = scale·dOut·w, dW = scale·dOutᵀ·in, dBias = Σ_i dOut[i,:].
func refMatmulBackward(dOut, in, w []float64, m, k, n int, scale float64) (dIn, dW, dBias []float64) {
	dIn = make([]float64, m*k)
	dW = make([]float64, n*k)
	dBias = make([]float64, n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			g := dOut[i*n+j]
			for p := 0; p < k; p++ {
				dIn[i*k+p] += scale * g * w[j*k+p]
				dW[j*k+p] += scale * g * in[i*k+p]
			}
			dBias[j] += g
		}
	}
	return dIn, dW, dBias
}

// refRMSNorm: rstd[r] = 1/sqrt(mean(in[r,:]²) + eps), out = in·rstd·weight.
func refRMSNorm(in, weight []float64, rows, dim int, eps float64) (out, rstd []float64) {
	out = make([]float64, rows*dim)
	rstd = make([]float64, rows)
	for r := 0; r < rows; r++ {
		ss := 0.0
		for j := 0; j < dim; j++ {
			ss += in[r*dim+j] * in[r*dim+j]
		}
		rstd[r] = 1 / math.Sqrt(ss/float64(dim)+eps)
		for j := 0; j < dim; j++ {
			out[r*dim+j] = in[r*dim+j] * rstd[r] * weight[j]
		}
	}
	return out, rstd
}

// refRMSNormBackward, with g = dOut and y_j = x_j·r·w_j, r = rstd:
//
//	dIn_j     = r·w_j·g_j − (r³/dim)·x_j·Σ_i g_i·w_i·x_i   (∂r/∂x_j = −r³·x_j/dim)
//	dWeight_j = Σ_rows g_j·x_j·r
func refRMSNormBackward(dOut, in, weight, rstd []float64, rows, dim int) (dIn, dWeight []float64) {
	dIn = make([]float64, rows*dim)
	dWeight = make([]float64, dim)
	for r := 0; r < rows; r++ {
		rs := rstd[r]
		dot := 0.0
		for i := 0; i < dim; i++ {
			dot += dOut[r*dim+i] * weight[i] * in[r*dim+i]
		}
		for j := 0; j < dim; j++ {
			x, g := in[r*dim+j], dOut[r*dim+j]
			dIn[r*dim+j] = rs*weight[j]*g - rs*rs*rs/float64(dim)*x*dot
			dWeight[j] += g * x * rs
		}
	}
	return dIn, dWeight
}

// ropeAngle is the rotation angle of pair i at position pos.
func ropeAngle(pos int32, i, headDim int, theta float64) float64 {
	f := math.Pow(theta, -2*float64(i)/float64(headDim))
	return float64(pos) * f
}

// refRoPE: rotate-half, for each row, head and i < h = headDim/2:
//
//	out[i]   = x[i]·cos a − x[i+h]·sin a
//	out[i+h] = x[i+h]·cos a + x[i]·sin a
func refRoPE(in []float64, positions []int32, rows, heads, headDim int, theta float64) []float64 {
	out := make([]float64, len(in))
	h := headDim / 2
	for r := 0; r < rows; r++ {
		for hd := 0; hd < heads; hd++ {
			base := (r*heads + hd) * headDim
			for i := 0; i < h; i++ {
				a := ropeAngle(positions[r], i, headDim, theta)
				x0, x1 := in[base+i], in[base+i+h]
				out[base+i] = x0*math.Cos(a) - x1*math.Sin(a)
				out[base+i+h] = x1*math.Cos(a) + x0*math.Sin(a)
			}
		}
	}
	return out
}

// refRoPEBackward applies the transpose (the inverse rotation) to dOut:
//
//	dIn[i]   =  dOut[i]·cos a + dOut[i+h]·sin a
//	dIn[i+h] = −dOut[i]·sin a + dOut[i+h]·cos a
func refRoPEBackward(dOut []float64, positions []int32, rows, heads, headDim int, theta float64) []float64 {
	dIn := make([]float64, len(dOut))
	h := headDim / 2
	for r := 0; r < rows; r++ {
		for hd := 0; hd < heads; hd++ {
			base := (r*heads + hd) * headDim
			for i := 0; i < h; i++ {
				a := ropeAngle(positions[r], i, headDim, theta)
				g0, g1 := dOut[base+i], dOut[base+i+h]
				dIn[base+i] = g0*math.Cos(a) + g1*math.Sin(a)
				dIn[base+i+h] = -g0*math.Sin(a) + g1*math.Cos(a)
			}
		}
	}
	return dIn
}

// attnShape is the shape of one Attention call.
type attnShape struct{ batch, seq, heads, kvHeads, headDim int }

// qi indexes q/out [batch, seq, heads, headDim]; ki indexes k/v
// [batch, seq, kvHeads, headDim]; li indexes lse [batch, heads, seq].
func (s attnShape) qi(b, t, h int) int  { return ((b*s.seq+t)*s.heads + h) * s.headDim }
func (s attnShape) ki(b, t, kh int) int { return ((b*s.seq+t)*s.kvHeads + kh) * s.headDim }
func (s attnShape) li(b, h, t int) int  { return (b*s.heads+h)*s.seq + t }
func (s attnShape) kvHead(h int) int    { return h / (s.heads / s.kvHeads) }

// refScores returns the scaled scores of query row t of head h against keys
// 0..t (causal) and their log-sum-exp.
func refScores(q, k []float64, s attnShape, b, h, t int) (scores []float64, lse float64) {
	scale := 1 / math.Sqrt(float64(s.headDim))
	kh := s.kvHead(h)
	scores = make([]float64, t+1)
	mx := math.Inf(-1)
	for j := 0; j <= t; j++ {
		dot := 0.0
		for d := 0; d < s.headDim; d++ {
			dot += q[s.qi(b, t, h)+d] * k[s.ki(b, j, kh)+d]
		}
		scores[j] = dot * scale
		mx = math.Max(mx, scores[j])
	}
	sum := 0.0
	for j := 0; j <= t; j++ {
		sum += math.Exp(scores[j] - mx)
	}
	return scores, mx + math.Log(sum)
}

// refAttention: out[b,t,h,:] = Σ_{j≤t} softmax_j(q·k_j/sqrt(d)) · v[b,j,kvHead(h),:].
func refAttention(q, k, v []float64, s attnShape) (out, lse []float64) {
	out = make([]float64, s.batch*s.seq*s.heads*s.headDim)
	lse = make([]float64, s.batch*s.heads*s.seq)
	for b := 0; b < s.batch; b++ {
		for h := 0; h < s.heads; h++ {
			kh := s.kvHead(h)
			for t := 0; t < s.seq; t++ {
				scores, l := refScores(q, k, s, b, h, t)
				lse[s.li(b, h, t)] = l
				for j := 0; j <= t; j++ {
					p := math.Exp(scores[j] - l)
					for d := 0; d < s.headDim; d++ {
						out[s.qi(b, t, h)+d] += p * v[s.ki(b, j, kh)+d]
					}
				}
			}
		}
	}
	return out, lse
}

// refAttentionBackward recomputes the probabilities P and applies the chain
// rule through softmax: with dP_j = dOut·v_j and D = Σ_j P_j·dP_j,
// dS_j = P_j·(dP_j − D); dq = Σ_j dS_j·k_j/sqrt(d); dk_j += dS_j·q/sqrt(d);
// dv_j += P_j·dOut. Query heads that share a kv head add into it.
func refAttentionBackward(dOut, q, k, v []float64, s attnShape) (dq, dk, dv []float64) {
	dq = make([]float64, len(q))
	dk = make([]float64, len(k))
	dv = make([]float64, len(v))
	scale := 1 / math.Sqrt(float64(s.headDim))
	for b := 0; b < s.batch; b++ {
		for h := 0; h < s.heads; h++ {
			kh := s.kvHead(h)
			for t := 0; t < s.seq; t++ {
				scores, l := refScores(q, k, s, b, h, t)
				p := make([]float64, t+1)
				dp := make([]float64, t+1)
				D := 0.0
				for j := 0; j <= t; j++ {
					p[j] = math.Exp(scores[j] - l)
					for d := 0; d < s.headDim; d++ {
						dp[j] += dOut[s.qi(b, t, h)+d] * v[s.ki(b, j, kh)+d]
					}
					D += p[j] * dp[j]
				}
				for j := 0; j <= t; j++ {
					ds := p[j] * (dp[j] - D)
					for d := 0; d < s.headDim; d++ {
						dq[s.qi(b, t, h)+d] += ds * k[s.ki(b, j, kh)+d] * scale
						dk[s.ki(b, j, kh)+d] += ds * q[s.qi(b, t, h)+d] * scale
						dv[s.ki(b, j, kh)+d] += p[j] * dOut[s.qi(b, t, h)+d]
					}
				}
			}
		}
	}
	return dq, dk, dv
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

// refSwiGLU: out = silu(gate)·up, silu(x) = x·sigmoid(x).
func refSwiGLU(gate, up []float64) []float64 {
	out := make([]float64, len(gate))
	for i := range gate {
		out[i] = gate[i] * sigmoid(gate[i]) * up[i]
	}
	return out
}

// refSwiGLUBackward: d silu(x)/dx = σ(x)·(1 + x·(1 − σ(x))), so
// dGate = dOut·up·σ(g)·(1 + g·(1−σ(g))), dUp = dOut·silu(g).
func refSwiGLUBackward(dOut, gate, up []float64) (dGate, dUp []float64) {
	dGate = make([]float64, len(gate))
	dUp = make([]float64, len(gate))
	for i, g := range gate {
		s := sigmoid(g)
		dGate[i] = dOut[i] * up[i] * s * (1 + g*(1-s))
		dUp[i] = dOut[i] * g * s
	}
	return dGate, dUp
}

// refDropout: out = in·mask/(1−p) for a given 0/1 mask. The mask itself is
// the backend's (a pure function of seed and index that the contract leaves
// to it); the suite recovers it from the forward and checks its statistics.
func refDropout(in []float64, mask []bool, p float64) []float64 {
	out := make([]float64, len(in))
	for i := range in {
		if mask[i] {
			out[i] = in[i] / (1 - p)
		}
	}
	return out
}

// refCrossEntropy: losses[r] = logsumexp(x[r,:]) − x[r,t_r] and
// dlogits[r,:] = gradScale·(softmax(x[r,:]) − onehot(t_r)); ignored rows get
// 0 and a zero gradient.
func refCrossEntropy(logits []float64, targets []int32, rows, vocab int, gradScale float64) (losses, dlogits []float64) {
	losses = make([]float64, rows)
	dlogits = make([]float64, rows*vocab)
	for r := 0; r < rows; r++ {
		if targets[r] == kernels.IgnoreIndex {
			continue
		}
		x := logits[r*vocab : (r+1)*vocab]
		mx := math.Inf(-1)
		for _, v := range x {
			mx = math.Max(mx, v)
		}
		sum := 0.0
		for _, v := range x {
			sum += math.Exp(v - mx)
		}
		lse := mx + math.Log(sum)
		losses[r] = lse - x[targets[r]]
		for j, v := range x {
			dlogits[r*vocab+j] = gradScale * math.Exp(v-lse)
		}
		dlogits[r*vocab+int(targets[r])] -= gradScale
	}
	return losses, dlogits
}

// refAdamW applies one AdamW step in place, exactly as kernels.AdamW states
// it (decay uses the parameter before the step).
func refAdamW(params, grads, m, v []float64, p kernels.AdamWParams) {
	b1, b2 := float64(p.Beta1), float64(p.Beta2)
	lr, eps, wd, gs := float64(p.LR), float64(p.Eps), float64(p.WeightDecay), float64(p.GradScale)
	c1 := 1 - math.Pow(b1, float64(p.Step))
	c2 := 1 - math.Pow(b2, float64(p.Step))
	for i := range params {
		g := grads[i] * gs
		m[i] = b1*m[i] + (1-b1)*g
		v[i] = b2*v[i] + (1-b2)*g*g
		mhat := m[i] / c1
		vhat := v[i] / c2
		params[i] -= lr * (mhat/(math.Sqrt(vhat)+eps) + wd*params[i])
	}
}

// refSumSquares: Σ in[i]².
func refSumSquares(in []float64) float64 {
	s := 0.0
	for _, x := range in {
		s += x * x
	}
	return s
}
