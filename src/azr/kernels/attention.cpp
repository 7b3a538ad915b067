// Training attention (forward and backward) in bf16 with fp32 accumulation, on AVX512-BF16 dot products.
//
// PyTorch's CPU flash-attention kernel does its block products through MKL's bf16 x bf16 -> fp32 GEMM, which on
// CPUs whose vendor MKL does not optimise for converts both operands to fp32 first; there its attention runs at a
// third of the dense products' rate. Here every product of the forward and backward pass is one register-blocked
// micro-kernel (8 rows x 32 columns of fp32 accumulators, `vdpbf16ps`) over operands laid out in pairs along the
// inner dimension, which is what the instruction reads.
//
// Layout: queries (B, H, L, d), keys/values (B, KV, S, d), H a multiple of KV (grouped-query attention: the H / KV
// query heads of one kv head are processed as one stack of rows). Causal means key j is seen by query i when j <= i
// (L == S). A task is one block of up to kRows stacked query rows against all the keys it can see, so no online
// softmax is needed: the block's scores fit in L2.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "bf16_gemm.h"

namespace {

using namespace azr_kernels;

constexpr int64_t kRows = 32;  // stacked query rows per task (even)

// dst[p][c][t] = src(2p + t, c) for a row-major (R x C) src with row stride ld, rows zero-padded to Rpad (even) and
// columns to Cpad: pairs along the rows.
void pair_rows(const uint16_t* src, int64_t R, int64_t C, int64_t ld, int64_t Rpad, int64_t Cpad, uint16_t* dst) {
  for (int64_t p = 0; p < Rpad / 2; ++p) {
    uint16_t* out = dst + p * Cpad * 2;
    const uint16_t* r0 = 2 * p < R ? src + 2 * p * ld : nullptr;
    const uint16_t* r1 = 2 * p + 1 < R ? src + (2 * p + 1) * ld : nullptr;
    for (int64_t c = 0; c < C; ++c) {
      out[2 * c] = r0 ? r0[c] : 0;
      out[2 * c + 1] = r1 ? r1[c] : 0;
    }
    std::fill(out + 2 * C, out + 2 * Cpad, 0);
  }
}

// dst[p][r][t] = src(r, 2p + t) for a row-major (R x C) src (C even), rows zero-padded to Rpad: pairs along the
// columns, i.e. the 32-bit words of src transposed.
void pair_cols(const uint16_t* src, int64_t R, int64_t C, int64_t ld, int64_t Rpad, uint16_t* dst) {
  uint32_t* out = reinterpret_cast<uint32_t*>(dst);
  for (int64_t p = 0; p < C / 2; ++p) {
    for (int64_t r = 0; r < R; ++r) {
      uint32_t w;
      std::memcpy(&w, src + r * ld + 2 * p, 4);
      out[p * Rpad + r] = w;
    }
    std::fill(out + p * Rpad + R, out + (p + 1) * Rpad, 0u);
  }
}

struct Shape {
  int64_t B, H, L, KV, S, D, G;  // G = H / KV query heads per kv head; rows of a kv head: G * L
  bool causal;
  float scale;
};

// Stacked row r of kv head h: query head h * G + r / L at position r % L.
inline int64_t row_offset(const Shape& s, int64_t b, int64_t h, int64_t r) {
  return ((b * s.H + h * s.G + r / s.L) * s.L + r % s.L) * s.D;
}

struct Packed {  // per (b, kv head): keys/values in the layouts the products read, keys zero-padded to Spad
  int64_t Spad;
  std::vector<uint16_t> k_by_d, k_by_key, v_by_d, v_by_key;  // [d/2][Spad][2] and [Spad/2][d][2]
};

Packed pack(const Shape& s, const uint16_t* k, const uint16_t* v, bool backward) {
  Packed pk;
  pk.Spad = round_up(s.S, kCols);
  const int64_t n = s.B * s.KV, per_d = s.D * pk.Spad;
  pk.k_by_d.resize(n * per_d);
  pk.v_by_key.resize(n * per_d);
  if (backward) {
    pk.v_by_d.resize(n * per_d);
    pk.k_by_key.resize(n * per_d);
  }
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const uint16_t* ki = k + i * s.S * s.D;
      const uint16_t* vi = v + i * s.S * s.D;
      pair_cols(ki, s.S, s.D, s.D, pk.Spad, pk.k_by_d.data() + i * per_d);
      pair_rows(vi, s.S, s.D, s.D, pk.Spad, s.D, pk.v_by_key.data() + i * per_d);
      if (backward) {
        pair_cols(vi, s.S, s.D, s.D, pk.Spad, pk.v_by_d.data() + i * per_d);
        pair_rows(ki, s.S, s.D, s.D, pk.Spad, s.D, pk.k_by_key.data() + i * per_d);
      }
    }
  });
  return pk;
}

// Keys row r may see (its limit) and the block's column count.
inline int64_t limit(const Shape& s, int64_t r) { return s.causal ? r % s.L + 1 : s.S; }

struct Task {
  int64_t b, h, r0, nr;
};

std::vector<Task> tasks(const Shape& s) {
  std::vector<Task> out;
  const int64_t rows = s.G * s.L;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t h = 0; h < s.KV; ++h)
      for (int64_t r0 = 0; r0 < rows; r0 += kRows) out.push_back({b, h, r0, std::min(kRows, rows - r0)});
  return out;
}

inline int64_t block_cols(const Shape& s, const Task& t) {
  int64_t most = 0;
  for (int64_t r = t.r0; r < t.r0 + t.nr; ++r) most = std::max(most, limit(s, r));
  return round_up(most, kCols);
}

void gather_rows(const Shape& s, const uint16_t* x, const Task& t, uint16_t* dst) {
  for (int64_t r = 0; r < kRows; ++r) {
    if (r < t.nr)
      std::memcpy(dst + r * s.D, x + row_offset(s, t.b, t.h, t.r0 + r), s.D * 2);
    else
      std::fill(dst + r * s.D, dst + (r + 1) * s.D, 0);
  }
}

#if AZR_HAVE_BF16_DOT
// One row of the forward's softmax over N columns (a multiple of 16), keys from `lim` on masked: writes the
// unnormalised probabilities exp(s * scale - top) in bf16 (zero past `lim`), returns their sum and sets `top`.
inline float softmax_row(const float* s, int64_t N, int64_t lim, float scale, uint16_t* p, float* top) {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 vs = _mm512_set1_ps(scale);
  __m512 most = _mm512_set1_ps(kNegInf);
  for (int64_t j = 0; j < lim; j += 16) {
    const __m512i col = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int32_t>(j)));
    const __mmask16 in = _mm512_cmplt_epi32_mask(col, _mm512_set1_epi32(static_cast<int32_t>(lim)));
    most = _mm512_mask_max_ps(most, in, most, _mm512_mul_ps(_mm512_loadu_ps(s + j), vs));
  }
  *top = _mm512_reduce_max_ps(most);
  const __m512 vt = _mm512_set1_ps(*top);
  __m512 sum = _mm512_setzero_ps();
  for (int64_t j = 0; j < N; j += 16) {
    const __m512i col = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int32_t>(j)));
    const __mmask16 in = _mm512_cmplt_epi32_mask(col, _mm512_set1_epi32(static_cast<int32_t>(lim)));
    const __m512 e = _mm512_maskz_mov_ps(in, exp_neg16(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), vs, vt)));
    sum = _mm512_add_ps(sum, e);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p + j), (__m256i)_mm512_cvtneps_pbh(e));
  }
  return _mm512_reduce_add_ps(sum);
}

void forward(const Shape& s, const uint16_t* q, const Packed& pk, uint16_t* out, float* lse) {
  const auto all = tasks(s);
  const int64_t per_d = s.D * pk.Spad;
  at::parallel_for(0, static_cast<int64_t>(all.size()), 1, [&](int64_t begin, int64_t end) {
    std::vector<uint16_t> qs(kRows * s.D), p(kRows * pk.Spad);
    std::vector<float> scores(kRows * pk.Spad), o(kRows * s.D), inv(kRows);
    for (int64_t i = begin; i < end; ++i) {
      const Task& t = all[i];
      const int64_t kv = t.b * s.KV + t.h, N = block_cols(s, t);
      gather_rows(s, q, t, qs.data());
      gemm(kRows, N, s.D / 2, qs.data(), s.D, pk.k_by_d.data() + kv * per_d, 2 * pk.Spad, scores.data(), N, false);
      for (int64_t r = 0; r < kRows; ++r) {
        float* sr = scores.data() + r * N;
        uint16_t* pr = p.data() + r * N;
        if (r >= t.nr) {
          std::fill(pr, pr + N, 0);
          continue;
        }
        const int64_t lim = limit(s, t.r0 + r);
        float top;
        const float total = softmax_row(sr, N, lim, s.scale, pr, &top);
        inv[r] = 1.f / total;
        lse[row_offset(s, t.b, t.h, t.r0 + r) / s.D] = top + std::log(total);
      }
      gemm(kRows, s.D, N / 2, p.data(), N, pk.v_by_key.data() + kv * per_d, 2 * s.D, o.data(), s.D, false);
      for (int64_t r = 0; r < t.nr; ++r) {
        uint16_t* dst = out + row_offset(s, t.b, t.h, t.r0 + r);
        for (int64_t c = 0; c < s.D; ++c) dst[c] = to_bf16(o[r * s.D + c] * inv[r]);
      }
    }
  });
}

// Two rows (r, r + 1) of the backward's elementwise part over N columns (a multiple of 16): from their scores
// `s` and dO . V^T products `g` (row-major, row stride N), keys past each row's limit zero; writes dS row-major
// (`ds`, rows r and r + 1) and P and dS interleaved by row (`p_pair`, `ds_pair`: [j][2]).
inline void softmax_grad_pair(const float* s, const float* g, int64_t N, int64_t lim0, int64_t lim1, float lse0,
                              float lse1, float delta0, float delta1, float scale, uint16_t* ds, uint16_t* p_pair,
                              uint16_t* ds_pair) {
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  // word k of the result takes word idx[k] of (row r's 16 values, row r + 1's 16 values)
  const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  const __m512 vs = _mm512_set1_ps(scale);
  for (int64_t j = 0; j < N; j += 16) {
    const __m512i col = _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int32_t>(j)));
    const __mmask16 in0 = _mm512_cmplt_epi32_mask(col, _mm512_set1_epi32(static_cast<int32_t>(lim0)));
    const __mmask16 in1 = _mm512_cmplt_epi32_mask(col, _mm512_set1_epi32(static_cast<int32_t>(lim1)));
    const __m512 p0 = _mm512_maskz_mov_ps(
        in0, exp_neg16(_mm512_fmsub_ps(_mm512_loadu_ps(s + j), vs, _mm512_set1_ps(lse0))));
    const __m512 p1 = _mm512_maskz_mov_ps(
        in1, exp_neg16(_mm512_fmsub_ps(_mm512_loadu_ps(s + N + j), vs, _mm512_set1_ps(lse1))));
    const __m512 d0 = _mm512_mul_ps(_mm512_mul_ps(p0, _mm512_sub_ps(_mm512_loadu_ps(g + j), _mm512_set1_ps(delta0))), vs);
    const __m512 d1 =
        _mm512_mul_ps(_mm512_mul_ps(p1, _mm512_sub_ps(_mm512_loadu_ps(g + N + j), _mm512_set1_ps(delta1))), vs);
    const __m512i pb = (__m512i)_mm512_cvtne2ps_pbh(p1, p0);  // words 0-15: row r, 16-31: row r + 1
    const __m512i db = (__m512i)_mm512_cvtne2ps_pbh(d1, d0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(ds + j), _mm512_castsi512_si256(db));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(ds + N + j), _mm512_extracti64x4_epi64(db, 1));
    _mm512_storeu_si512(p_pair + 2 * j, _mm512_permutexvar_epi16(inter, pb));
    _mm512_storeu_si512(ds_pair + 2 * j, _mm512_permutexvar_epi16(inter, db));
  }
}

void backward(const Shape& s, const uint16_t* grad, const uint16_t* q, const uint16_t* out, const float* lse,
              const Packed& pk, uint16_t* dq, float* dk_t, float* dv_t) {
  // dk_t / dv_t: per thread, per (b, kv head), (d x Spad) fp32 sums of the transposed key/value gradients.
  const auto all = tasks(s);
  const int64_t per_d = s.D * pk.Spad, per_thread = s.B * s.KV * per_d;
  at::parallel_for(0, static_cast<int64_t>(all.size()), 1, [&](int64_t begin, int64_t end) {
    const int64_t tid = at::get_thread_num();
    float* dk_mine = dk_t + tid * per_thread;
    float* dv_mine = dv_t + tid * per_thread;
    std::vector<uint16_t> qs(kRows * s.D), gs(kRows * s.D), os(kRows * s.D), q_t(s.D * kRows), g_t(s.D * kRows);
    std::vector<uint16_t> ds_rows(kRows * pk.Spad), p_pairs(kRows * pk.Spad), ds_pairs(kRows * pk.Spad);
    std::vector<float> pr(kRows * pk.Spad), dp(kRows * pk.Spad), dqf(kRows * s.D), delta(kRows), lr(kRows);
    for (int64_t i = begin; i < end; ++i) {
      const Task& t = all[i];
      const int64_t kv = t.b * s.KV + t.h, N = block_cols(s, t);
      gather_rows(s, q, t, qs.data());
      gather_rows(s, grad, t, gs.data());
      gather_rows(s, out, t, os.data());
      for (int64_t r = 0; r < kRows; ++r) {
        float d = 0.f;
        for (int64_t c = 0; c < s.D; ++c) d += from_bf16(gs[r * s.D + c]) * from_bf16(os[r * s.D + c]);
        delta[r] = d;
        lr[r] = r < t.nr ? lse[row_offset(s, t.b, t.h, t.r0 + r) / s.D] : 0.f;
      }
      gemm(kRows, N, s.D / 2, qs.data(), s.D, pk.k_by_d.data() + kv * per_d, 2 * pk.Spad, pr.data(), N, false);
      gemm(kRows, N, s.D / 2, gs.data(), s.D, pk.v_by_d.data() + kv * per_d, 2 * pk.Spad, dp.data(), N, false);
      // P = exp(S * scale - lse) and dS = P (dP - delta) * scale, two rows at a time: dS row-major (the A operand
      // of dQ = dS . K) and both in pairs along the rows (the B operands of dV^T = dO^T P and dK^T = Q^T dS).
      for (int64_t r = 0; r < kRows; r += 2) {
        const int64_t lim0 = r < t.nr ? limit(s, t.r0 + r) : 0, lim1 = r + 1 < t.nr ? limit(s, t.r0 + r + 1) : 0;
        softmax_grad_pair(pr.data() + r * N, dp.data() + r * N, N, lim0, lim1, lr[r], lr[r + 1], delta[r],
                          delta[r + 1], s.scale, ds_rows.data() + r * N, p_pairs.data() + r * N,
                          ds_pairs.data() + r * N);
      }
      // dQ = scale-folded dS . K
      gemm(kRows, s.D, N / 2, ds_rows.data(), N, pk.k_by_key.data() + kv * per_d, 2 * s.D, dqf.data(), s.D, false);
      for (int64_t r = 0; r < t.nr; ++r) {
        uint16_t* dst = dq + row_offset(s, t.b, t.h, t.r0 + r);
        for (int64_t c = 0; c < s.D; ++c) dst[c] = to_bf16(dqf[r * s.D + c]);
      }
      for (int64_t r = 0; r < kRows; ++r)
        for (int64_t c = 0; c < s.D; ++c) {
          q_t[c * kRows + r] = qs[r * s.D + c];
          g_t[c * kRows + r] = gs[r * s.D + c];
        }
      gemm(s.D, N, kRows / 2, g_t.data(), kRows, p_pairs.data(), 2 * N, dv_mine + kv * per_d, pk.Spad, true);
      gemm(s.D, N, kRows / 2, q_t.data(), kRows, ds_pairs.data(), 2 * N, dk_mine + kv * per_d, pk.Spad, true);
    }
  });
}
#endif

Shape shape_of(const torch::Tensor& q, const torch::Tensor& k, bool causal, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4, "queries and keys must be (B, heads, length, d)");
  Shape s{q.size(0), q.size(1), q.size(2), k.size(1), k.size(2), q.size(3), 0, causal, static_cast<float>(scale)};
  TORCH_CHECK(s.H % s.KV == 0 && k.size(0) == s.B && k.size(3) == s.D, "key shape does not match the queries");
  TORCH_CHECK(s.D % 32 == 0, "head size must be a multiple of 32");
  TORCH_CHECK(!causal || s.L == s.S, "causal attention needs as many queries as keys");
  s.G = s.H / s.KV;
  return s;
}

}  // namespace

bool bf16_attention_available() { return AZR_HAVE_BF16_DOT; }

// Output (B, H, L, d) bf16 and log-sum-exps (B, H, L) fp32 of the scaled scores.
std::vector<torch::Tensor> bf16_attention_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, bool causal,
                                                  double scale) {
  check_bf16({&q, &k, &v});
  const Shape s = shape_of(q, k, causal, scale);
  auto out = torch::empty_like(q);
  auto lse = torch::empty({s.B, s.H, s.L}, q.options().dtype(torch::kFloat32));
#if AZR_HAVE_BF16_DOT
  const Packed pk = pack(s, u16(k), u16(v), false);
  forward(s, u16(q), pk, u16m(out), lse.data_ptr<float>());
#else
  TORCH_CHECK(false, "this CPU build has no AVX512-BF16 dot products");
#endif
  return {out, lse};
}

// Gradients (dq, dk, dv) of the attention whose forward gave `out` and `lse`; dk/dv summed over each kv head's
// query heads.
std::vector<torch::Tensor> bf16_attention_backward(torch::Tensor grad, torch::Tensor q, torch::Tensor k,
                                                   torch::Tensor v, torch::Tensor out, torch::Tensor lse,
                                                   bool causal, double scale) {
  check_bf16({&grad, &q, &k, &v, &out});
  TORCH_CHECK(lse.scalar_type() == torch::kFloat32 && lse.is_contiguous(), "lse must be contiguous fp32");
  const Shape s = shape_of(q, k, causal, scale);
  auto dq = torch::empty_like(q);
#if AZR_HAVE_BF16_DOT
  const Packed pk = pack(s, u16(k), u16(v), true);
  const int64_t threads = at::get_num_threads(), per_thread = s.B * s.KV * s.D * pk.Spad;
  std::vector<float> dk_t(threads * per_thread, 0.f), dv_t(threads * per_thread, 0.f);
  backward(s, u16(grad), u16(q), u16(out), lse.data_ptr<float>(), pk, u16m(dq), dk_t.data(), dv_t.data());
  auto dk = torch::empty_like(k), dv = torch::empty_like(v);
  uint16_t* dkp = u16m(dk);
  uint16_t* dvp = u16m(dv);
  at::parallel_for(0, s.B * s.KV, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      for (int64_t j = 0; j < s.S; ++j)
        for (int64_t c = 0; c < s.D; ++c) {
          float a = 0.f, b = 0.f;
          for (int64_t t = 0; t < threads; ++t) {
            const int64_t at_ = t * per_thread + (i * s.D + c) * pk.Spad + j;
            a += dk_t[at_];
            b += dv_t[at_];
          }
          dkp[(i * s.S + j) * s.D + c] = to_bf16(a);
          dvp[(i * s.S + j) * s.D + c] = to_bf16(b);
        }
  });
  return {dq, dk, dv};
#else
  TORCH_CHECK(false, "this CPU build has no AVX512-BF16 dot products");
  return {dq, dq, dq};
#endif
}
