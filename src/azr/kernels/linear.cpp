// A few rows times a linear layer's weight in bf16 (decode and prefill), on the micro-kernel of bf16_gemm.h.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "bf16_gemm.h"

using namespace azr_kernels;

// A linear layer's weight (N, K) bf16 in the layout bf16_linear reads: 32-column tiles, each contiguous and paired
// along K, [Npad/32][K/2][32][2], N zero-padded to a multiple of 32.
torch::Tensor bf16_pack_linear(torch::Tensor w) {
  check_bf16({&w});
  TORCH_CHECK(w.dim() == 2 && w.size(1) % 2 == 0, "expected an (out, in) weight with an even input width");
  const int64_t N = w.size(0), K = w.size(1), tiles = round_up(N, kCols) / kCols, K2 = K / 2;
  auto out = torch::empty({tiles, K2, kCols, 2}, w.options());
  uint32_t* dst = reinterpret_cast<uint32_t*>(u16m(out));
  const uint16_t* src = u16(w);
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      uint32_t* tile = dst + t * K2 * kCols;  // 32 x K2 words, written within L1/L2
      for (int64_t j = 0; j < kCols; ++j) {
        const int64_t n = t * kCols + j;
        if (n >= N) {
          for (int64_t p = 0; p < K2; ++p) tile[p * kCols + j] = 0u;
          continue;
        }
        const uint32_t* row = reinterpret_cast<const uint32_t*>(src + n * K);  // w[n][2p], w[n][2p + 1] as a word
        for (int64_t p = 0; p < K2; ++p) tile[p * kCols + j] = row[p];
      }
    }
  });
  return out;
}

// x (M, K) bf16 times a packed weight (bf16_pack_linear of an (N, K) weight): (M, N) bf16, fp32 accumulation. For
// the few rows of a decode step: each weight tile streams once per 8 rows, the threads split the tiles.
torch::Tensor bf16_linear(torch::Tensor x, torch::Tensor packed, int64_t N) {
  check_bf16({&x, &packed});
  TORCH_CHECK(x.dim() == 2 && packed.dim() == 4 && packed.size(1) * 2 == x.size(1), "shapes do not match");
  const int64_t M = x.size(0), tiles = packed.size(0), K2 = packed.size(1);
  TORCH_CHECK(N <= tiles * kCols, "the packed weight has fewer outputs than asked");
  auto out = torch::empty({M, N}, x.options());
#if AZR_HAVE_BF16_DOT
  const uint16_t* a = u16(x);
  const uint16_t* b = u16(packed);
  uint16_t* o = u16m(out);
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float c[8 * kCols];
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t n0 = tile * kCols, width = std::min<int64_t>(kCols, N - n0);
      for (int64_t m0 = 0; m0 < M; m0 += 8) {
        const int64_t rows = std::min<int64_t>(8, M - m0);
        gemm(rows, kCols, K2, a + m0 * 2 * K2, 2 * K2, b + tile * K2 * 2 * kCols, 2 * kCols, c, kCols, false);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < width; ++j) o[(m0 + r) * N + n0 + j] = to_bf16(c[r * kCols + j]);
      }
    }
  });
#else
  TORCH_CHECK(false, "this CPU build has no AVX512-BF16 dot products");
#endif
  return out;
}
