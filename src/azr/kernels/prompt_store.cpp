// One decode step's attention over azr's prompt store (azr/rollout/shared_kv.py), in one pass over the keys.
//
// A row's keys/values come in parts: one entry of each shared level (its prompt's head, its prompt's rest) and the
// row's own tail of generated tokens. Each part is attended separately and the parts are merged exactly through
// their log-sum-exps. A level's entry is read once for every row that reads it: the work items of a level are
// (entry, kv head) pairs, each scoring the queries of all its rows against the entry's keys as they stream by.
// A decode step reads a few megabytes per layer and computes little, so the loops below are written to stream
// keys/values once and keep everything else in cache; fp32 accumulation throughout.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "common.h"

namespace {

using azr_kernels::exp_neg;
using azr_kernels::kNegInf;

template <typename T, int D>
inline void load_row(const T* src, float* dst) {
#pragma omp simd
  for (int i = 0; i < D; ++i) dst[i] = static_cast<float>(src[i]);
}

// Attention of `nq` queries (fp32, `q[j * D]`) over `len` keys/values with row stride `D`; `keep` (len) or null.
// Writes normalised outputs `out[j * D]` and log-sum-exps `lse[j]` (scaled scores); no position kept: lse -inf,
// output 0. `scores` is scratch of nq * len floats.// Values are summed for kBlock queries at a time.
constexpr int kBlock = 4;

template <typename T, int D>
void attend_part(const float* q, int64_t nq, const T* keys, const T* values, const bool* keep, int64_t len,
                 float scale, float* out, float* lse, float* scores) {
  alignas(64) float row[D];
  for (int64_t l = 0; l < len; ++l) {
    if (keep && !keep[l]) {
      for (int64_t j = 0; j < nq; ++j) scores[j * len + l] = kNegInf;
      continue;
    }
    load_row<T, D>(keys + l * D, row);
    for (int64_t j = 0; j < nq; ++j) {
      const float* qj = q + j * D;
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int i = 0; i < D; ++i) acc += qj[i] * row[i];
      scores[j * len + l] = acc * scale;
    }
  }
  for (int64_t j = 0; j < nq; ++j) {
    float* s = scores + j * len;
    float top = kNegInf;
#pragma omp simd reduction(max : top)
    for (int64_t l = 0; l < len; ++l) top = std::max(top, s[l]);
    if (top == kNegInf) {
      lse[j] = kNegInf;
      continue;
    }
    float total = 0.f;
#pragma omp simd reduction(+ : total)
    for (int64_t l = 0; l < len; ++l) {
      s[l] = exp_neg(s[l] - top);
      total += s[l];
    }
    const float inv = 1.f / total;
#pragma omp simd
    for (int64_t l = 0; l < len; ++l) s[l] *= inv;
    lse[j] = top + std::log(total);
  }
  for (int64_t j0 = 0; j0 < nq; j0 += kBlock) {
    const int64_t jb = std::min<int64_t>(kBlock, nq - j0);
    alignas(64) float acc[kBlock][D] = {};
    for (int64_t l = 0; l < len; ++l) {
      if (keep && !keep[l]) continue;
      load_row<T, D>(values + l * D, row);
      for (int64_t jj = 0; jj < jb; ++jj) {
        const float p = scores[(j0 + jj) * len + l];
#pragma omp simd
        for (int i = 0; i < D; ++i) acc[jj][i] += p * row[i];
      }
    }
    for (int64_t jj = 0; jj < jb; ++jj) std::copy_n(acc[jj], D, out + (j0 + jj) * D);
  }
}

// One unit of work: the queries of rows `rows` (all reading entry `n` of part `part`, kv head `h`) against that
// entry's keys. The tail is a part whose entries are the rows themselves.
struct Item {
  int64_t part, n, h, len;
  std::vector<int64_t> rows;
};

constexpr size_t kRowsPerItem = 8;  // a shared entry read by many rows is split so that the threads share it

// Contiguous runs of items of about equal cost (queries x keys), one per thread.
std::vector<std::pair<size_t, size_t>> balance(const std::vector<Item>& items, int64_t R, int threads) {
  std::vector<double> cost(items.size());
  double total = 0;
  for (size_t i = 0; i < items.size(); ++i) total += cost[i] = double(items[i].rows.size() * R) * (items[i].len + 8);
  std::vector<std::pair<size_t, size_t>> runs;
  size_t start = 0;
  double acc = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    acc += cost[i];
    if (acc >= total * double(runs.size() + 1) / threads && static_cast<int>(runs.size()) < threads - 1) {
      runs.emplace_back(start, i + 1);
      start = i + 1;
    }
  }
  runs.emplace_back(start, items.size());
  return runs;
}

template <typename T, int D>
void run(const torch::Tensor& q, const std::vector<torch::Tensor>& keys, const std::vector<torch::Tensor>& values,
         const std::vector<torch::Tensor>& keeps, const std::vector<torch::Tensor>& entries,
         const torch::Tensor& tail_k, const torch::Tensor& tail_v, int64_t tail_len, float scale,
         torch::Tensor& out) {
  const int64_t B = q.size(0), K = q.size(1), R = q.size(2);
  const int64_t levels = static_cast<int64_t>(keys.size()), parts = levels + 1;
  auto qf = q.to(torch::kFloat32).contiguous();
  const float* qp = qf.data_ptr<float>();
  // Per part and row: outputs (K, R, D) and log-sum-exps (K, R).
  std::vector<float> part_out(parts * B * K * R * D), part_lse(parts * B * K * R);
  auto slot = [&](int64_t p, int64_t b, int64_t h) { return ((p * B + b) * K + h) * R; };

  std::vector<Item> items;
  for (int64_t p = 0; p < levels; ++p) {
    const int64_t N = keys[p].size(0), L = keys[p].size(2);
    const int64_t* entry = entries[p].data_ptr<int64_t>();
    std::vector<std::vector<int64_t>> rows(N);
    for (int64_t b = 0; b < B; ++b) rows[entry[b]].push_back(b);
    for (int64_t n = 0; n < N; ++n)
      for (size_t r0 = 0; r0 < rows[n].size(); r0 += kRowsPerItem)
        for (int64_t h = 0; h < K; ++h) {
          const size_t r1 = std::min(rows[n].size(), r0 + kRowsPerItem);
          items.push_back({p, n, h, L, std::vector<int64_t>(rows[n].begin() + r0, rows[n].begin() + r1)});
        }
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < K; ++h) items.push_back({levels, b, h, tail_len, {b}});

  const int64_t T_max = tail_k.size(2);
  const auto runs = balance(items, R, at::get_num_threads());
  at::parallel_for(0, static_cast<int64_t>(runs.size()), 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qs, os, ls, scores;
    for (int64_t t = begin; t < end; ++t) {
      for (size_t i = runs[t].first; i < runs[t].second; ++i) {
        const Item& it = items[i];
        const int64_t nq = static_cast<int64_t>(it.rows.size()) * R;
        qs.resize(nq * D);
        os.resize(nq * D);
        ls.resize(nq);
        scores.resize(nq * it.len);
        for (size_t m = 0; m < it.rows.size(); ++m)
          std::copy_n(qp + ((it.rows[m] * K + it.h) * R) * D, R * D, qs.data() + m * R * D);
        const T *kp, *vp;
        const bool* keep = nullptr;
        if (it.part < levels) {
          const int64_t at = (it.n * K + it.h) * it.len * D;
          kp = keys[it.part].data_ptr<T>() + at;
          vp = values[it.part].data_ptr<T>() + at;
          keep = keeps[it.part].data_ptr<bool>() + it.n * it.len;
        } else {
          const int64_t at = (it.n * K + it.h) * T_max * D;
          kp = tail_k.data_ptr<T>() + at;
          vp = tail_v.data_ptr<T>() + at;
        }
        attend_part<T, D>(qs.data(), nq, kp, vp, keep, it.len, scale, os.data(), ls.data(), scores.data());
        for (size_t m = 0; m < it.rows.size(); ++m) {
          const int64_t s = slot(it.part, it.rows[m], it.h);
          std::copy_n(os.data() + m * R * D, R * D, part_out.data() + s * D);
          std::copy_n(ls.data() + m * R, R, part_lse.data() + s);
        }
      }
    }
  });

  // Merge the parts of every (row, head, query): a few kilobytes, not worth a parallel region.
  T* op = out.data_ptr<T>();
  alignas(64) float acc[D];
  const int64_t stride = B * K * R;
  for (int64_t w = 0; w < stride; ++w) {  // w = (b * K + h) * R + r
    float top = kNegInf;
    for (int64_t p = 0; p < parts; ++p) top = std::max(top, part_lse[p * stride + w]);
    std::fill(acc, acc + D, 0.f);
    float total = 0.f;
    for (int64_t p = 0; p < parts; ++p) {
      const float l = part_lse[p * stride + w];
      if (l == kNegInf) continue;
      const float weight = std::exp(l - top);
      total += weight;
      const float* o = part_out.data() + (p * stride + w) * D;
#pragma omp simd
      for (int i = 0; i < D; ++i) acc[i] += weight * o[i];
    }
    const float inv = 1.f / total;
    for (int i = 0; i < D; ++i) op[w * D + i] = static_cast<T>(acc[i] * inv);
  }
}

}  // namespace

// q (B, K, R, d); keys[i]/values[i] (N_i, K, L_i, d) and keeps[i] (N_i, L_i) bool for each shared level, entries[i]
// (B,) int64 the entry row b reads; tail_k/tail_v (B, K, T, d) of which the first tail_len positions are real.
// Returns (B, K, R, d) in q's dtype. All tensors contiguous, keys/values/tails in q's dtype.
torch::Tensor prompt_store_attention(torch::Tensor q, std::vector<torch::Tensor> keys,
                                     std::vector<torch::Tensor> values, std::vector<torch::Tensor> keeps,
                                     std::vector<torch::Tensor> entries, torch::Tensor tail_k, torch::Tensor tail_v,
                                     int64_t tail_len, double scale) {
  TORCH_CHECK(q.dim() == 4 && q.is_contiguous(), "q must be a contiguous (B, K, R, d) tensor");
  TORCH_CHECK(tail_len >= 1, "the tail must hold the current token");
  TORCH_CHECK(tail_k.is_contiguous() && tail_v.is_contiguous(), "tails must be contiguous");
  for (size_t i = 0; i < keys.size(); ++i) {
    TORCH_CHECK(keys[i].is_contiguous() && values[i].is_contiguous() && keeps[i].is_contiguous(),
                "level tensors must be contiguous");
    TORCH_CHECK(keys[i].scalar_type() == q.scalar_type() && keeps[i].scalar_type() == torch::kBool &&
                    entries[i].scalar_type() == torch::kInt64,
                "level dtypes: keys/values like q, keep bool, entry int64");
  }
  TORCH_CHECK(tail_k.scalar_type() == q.scalar_type(), "tails must have q's dtype");
  auto out = torch::empty_like(q);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "prompt_store_attention", [&] {
    const float sc = static_cast<float>(scale);
    switch (q.size(3)) {
      case 64: run<scalar_t, 64>(q, keys, values, keeps, entries, tail_k, tail_v, tail_len, sc, out); break;
      case 128: run<scalar_t, 128>(q, keys, values, keeps, entries, tail_k, tail_v, tail_len, sc, out); break;
      default: TORCH_CHECK(false, "head size ", q.size(3), " is not compiled in (64, 128)");
    }
  });
  return out;
}

// attention.cpp
bool bf16_attention_available();
std::vector<torch::Tensor> bf16_attention_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v, bool causal,
                                                  double scale);
std::vector<torch::Tensor> bf16_attention_backward(torch::Tensor grad, torch::Tensor q, torch::Tensor k,
                                                   torch::Tensor v, torch::Tensor out, torch::Tensor lse,
                                                   bool causal, double scale);
torch::Tensor bf16_pack_linear(torch::Tensor w);
torch::Tensor bf16_linear(torch::Tensor x, torch::Tensor packed, int64_t N);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("prompt_store_attention", &prompt_store_attention, "azr prompt-store decode attention (CPU)");
  m.def("bf16_attention_available", &bf16_attention_available, "whether the training attention kernels are built");
  m.def("bf16_attention_forward", &bf16_attention_forward, "azr bf16 attention forward: (out, lse)");
  m.def("bf16_attention_backward", &bf16_attention_backward, "azr bf16 attention backward: (dq, dk, dv)");
  m.def("bf16_pack_linear", &bf16_pack_linear, "a linear weight in bf16_linear's layout");
  m.def("bf16_linear", &bf16_linear, "x @ weight.T for a few rows of bf16, on a packed weight");
}
