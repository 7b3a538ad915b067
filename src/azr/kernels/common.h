// Helpers shared by azr's CPU kernels (prompt_store.cpp, attention.cpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace azr_kernels {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp(x) for x <= 0 as 2^n * 2^f, 2^f on [0, 1) by a degree-6 polynomial (relative error below 2e-7), written
// so that the compiler vectorises the loops that call it (libm's expf does not vectorise here). x = -inf gives 0.
inline float exp_neg(float x) {
  float y = x * 1.44269504088896341f;
  y = y < -126.f ? -126.f : y;
  const float n = std::floor(y);
  const float f = y - n;
  float p = 1.535336188319500e-4f;
  p = p * f + 1.339887440266574e-3f;
  p = p * f + 9.618437357674640e-3f;
  p = p * f + 5.550332471162809e-2f;
  p = p * f + 2.402264791363012e-1f;
  p = p * f + 6.931472028550421e-1f;
  p = p * f + 1.f;
  int32_t bits;
  std::memcpy(&bits, &p, sizeof(bits));
  bits += static_cast<int32_t>(n) << 23;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return x * 1.44269504088896341f < -126.f ? 0.f : out;
}

}  // namespace azr_kernels
