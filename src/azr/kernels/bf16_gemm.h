// The bf16 matrix-product micro-kernel that azr's attention (attention.cpp) and linear (linear.cpp) kernels share:
// C[M x N] (+)= A . B in fp32 from bf16 operands, B laid out in pairs along the inner dimension, on AVX512-BF16
// dot products (`vdpbf16ps`, 8 x 32 accumulators). AZR_HAVE_BF16_DOT says whether this build has them.
#pragma once

#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>

#include "common.h"

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define AZR_HAVE_BF16_DOT 1
#else
#define AZR_HAVE_BF16_DOT 0
#endif

namespace azr_kernels {

constexpr int64_t kCols = 32;  // columns per micro-kernel tile

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

inline uint16_t to_bf16(float f) {  // round to nearest even (no NaNs here)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline float from_bf16(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

#if AZR_HAVE_BF16_DOT
// exp_neg (common.h) on 16 lanes.
inline __m512 exp_neg16(__m512 x) {
  const __m512 y0 = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
  const __m512 y = _mm512_max_ps(y0, _mm512_set1_ps(-126.f));
  const __m512 n = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(y, n);
  __m512 p = _mm512_set1_ps(1.535336188319500e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440266574e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  const __m512i bits = _mm512_add_epi32(_mm512_castps_si512(p), _mm512_slli_epi32(_mm512_cvtps_epi32(n), 23));
  const __mmask16 under = _mm512_cmp_ps_mask(y0, _mm512_set1_ps(-126.f), _CMP_LT_OQ);
  return _mm512_maskz_mov_ps(static_cast<__mmask16>(~under), _mm512_castsi512_ps(bits));
}

// C[MR x 32] (+)= A[MR x 2*K2] . B, A row-major bf16 (stride lda), B in pairs along the inner dimension:
// B[p * ldb + 2 * n + t] = B(2p + t, n) for the tile's 32 columns.
template <int MR>
inline void micro(const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, int64_t K2, float* C, int64_t ldc,
                  bool accumulate) {
  __m512 c0[MR], c1[MR];
  for (int r = 0; r < MR; ++r) {
    c0[r] = accumulate ? _mm512_loadu_ps(C + r * ldc) : _mm512_setzero_ps();
    c1[r] = accumulate ? _mm512_loadu_ps(C + r * ldc + 16) : _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < K2; ++p) {
    const __m512i b0 = _mm512_loadu_si512(B + p * ldb);
    const __m512i b1 = _mm512_loadu_si512(B + p * ldb + 32);
    for (int r = 0; r < MR; ++r) {
      int32_t pair;
      std::memcpy(&pair, A + r * lda + 2 * p, 4);
      const __m512i a = _mm512_set1_epi32(pair);
      c0[r] = _mm512_dpbf16_ps(c0[r], (__m512bh)a, (__m512bh)b0);
      c1[r] = _mm512_dpbf16_ps(c1[r], (__m512bh)a, (__m512bh)b1);
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm512_storeu_ps(C + r * ldc, c0[r]);
    _mm512_storeu_ps(C + r * ldc + 16, c1[r]);
  }
}

// C[M x N] (+)= A[M x 2*K2] . B for N a multiple of 32, B paired as in `micro` with row stride ldb.
inline void gemm(int64_t M, int64_t N, int64_t K2, const uint16_t* A, int64_t lda, const uint16_t* B, int64_t ldb, float* C,
          int64_t ldc, bool accumulate) {
  for (int64_t n0 = 0; n0 < N; n0 += kCols) {
    for (int64_t m0 = 0; m0 < M; m0 += 8) {
      const uint16_t* a = A + m0 * lda;
      const uint16_t* b = B + 2 * n0;
      float* c = C + m0 * ldc + n0;
      switch (std::min<int64_t>(8, M - m0)) {
        case 8: micro<8>(a, lda, b, ldb, K2, c, ldc, accumulate); break;
        case 7: micro<7>(a, lda, b, ldb, K2, c, ldc, accumulate); break;
        case 6: micro<6>(a, lda, b, ldb, K2, c, ldc, accumulate); break;
        case 5: micro<5>(a, lda, b, ldb, K2, c, ldc, accumulate); break;
        case 4: micro<4>(a, lda, b, ldb, K2, c, ldc, accumulate); break;
        case 3: micro<3>(a, lda, b, ldb, K2, c, ldc, accumulate); break;
        case 2: micro<2>(a, lda, b, ldb, K2, c, ldc, accumulate); break;
        default: micro<1>(a, lda, b, ldb, K2, c, ldc, accumulate); break;
      }
    }
  }
}
#endif

inline void check_bf16(std::initializer_list<const torch::Tensor*> ts) {
  for (auto* t : ts)
    TORCH_CHECK(t->scalar_type() == torch::kBFloat16 && t->is_contiguous(), "expected contiguous bf16 tensors");
}

inline const uint16_t* u16(const torch::Tensor& t) {
  return reinterpret_cast<const uint16_t*>(t.data_ptr<at::BFloat16>());
}
inline uint16_t* u16m(torch::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>()); }

}  // namespace azr_kernels
