// MatchTrans (Xiao & Lee, ECCV 2018, Sec. 3.3) as the authors implemented it.
//
// For every position p = (y, x) and offset o = (dy, dx) in [-k, k]^2 whose neighbour
// q = p + o lies inside the map:
//
//   a(o)  = max(0, <F_t(p), F_{t-1}(q)> / ((|F_t(p)| + 1e-8) (|F_{t-1}(q)| + 1e-8)))
//   mass  = sum_o a(o)
//   M'(p) = sum_o a(o) / mass * M_{t-1}(q)        if mass >= 1e-7
//   M'(p) = M_{t-1}(p)                             otherwise
//
// Out-of-bounds neighbours are skipped, not zero padded, and their coefficient is 0.
// In the fallback case the coefficients are a one-hot at o = (0, 0), so that
// M' = sum_o coef(o) M_{t-1}(p + o) holds everywhere and the gradient with respect to
// the memory is the transpose of that sum. As in the authors' code, no gradient flows
// into the features through the coefficients.
//
// Layout: NHWC. features, prev_features: [B, H, W, C]; prev_memory: [B, H, W, D];
// coefficients: [B, H, W, (2k+1)^2], offset (dy, dx) at index (dy+k)*(2k+1) + (dx+k).
//
// The per-position arithmetic below is shared by the CPU and the CUDA kernels
// (STMN_HOST_DEVICE), so the CPU tests exercise the GPU's arithmetic too.

#ifndef STMN_CUSTOM_OPS_MATCH_TRANS_MATCH_TRANS_H_
#define STMN_CUSTOM_OPS_MATCH_TRANS_MATCH_TRANS_H_

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define STMN_HOST_DEVICE __host__ __device__ inline
#else
#define STMN_HOST_DEVICE inline
#endif

// Reductions over channels: vectorised on the CPU (compiled with -fopenmp-simd),
// plain loops on the GPU, where one thread owns one position.
#if defined(__CUDA_ARCH__)
#define STMN_SIMD_REDUCE
#define STMN_SIMD
#else
#define STMN_PRAGMA(x) _Pragma(#x)
#define STMN_SIMD_REDUCE STMN_PRAGMA(omp simd reduction(+ : acc))
#define STMN_SIMD STMN_PRAGMA(omp simd)
#endif

namespace stmn {
namespace match_trans {

constexpr float kNormEpsilon = 1e-8f;
constexpr float kMinMass = 1e-7f;

// Accumulation type: float for half and float, double for double.
template <typename T>
struct Accumulator {
  using type = float;
};
template <>
struct Accumulator<double> {
  using type = double;
};

template <typename A, typename T>
STMN_HOST_DEVICE A Dot(const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
  A acc = A(0);
  STMN_SIMD_REDUCE
  for (int64_t i = 0; i < n; ++i) {
    acc += static_cast<A>(a[i]) * static_cast<A>(b[i]);
  }
  return acc;
}

// |v| + 1e-8, the denominator factor of the cosine in the authors' code.
template <typename A, typename T>
STMN_HOST_DEVICE A NormPlusEpsilon(const T* v, int64_t n) {
  return sqrt(Dot<A>(v, v, n)) + A(kNormEpsilon);
}

// The affinity of the authors' code: the ReLU'd cosine, with each norm + 1e-8.
template <typename A>
STMN_HOST_DEVICE A Affinity(A dot, A norm_f, A norm_q) {
  const A a = dot / (norm_f * norm_q);
  return a > A(0) ? a : A(0);
}

// Normalises a window of affinities (in `coef`, [(2k+1)^2], out-of-bounds entries 0)
// by their sum `mass`; with no positive affinity the memory is kept as it is
// (a one-hot at the centre).
template <typename T, typename A>
STMN_HOST_DEVICE void NormaliseWindow(A mass, int k, T* coef) {
  const int K = 2 * k + 1;
  if (mass >= A(kMinMass)) {
    const A inv = A(1) / mass;
    for (int i = 0; i < K * K; ++i) coef[i] = static_cast<T>(static_cast<A>(coef[i]) * inv);
  } else {
    for (int i = 0; i < K * K; ++i) coef[i] = static_cast<T>(0);
    coef[k * K + k] = static_cast<T>(1);
  }
}

// Writes the normalised coefficients of position (y, x) to `coef` ([(2k+1)^2]);
// `coef` doubles as scratch for the affinities (cosines, so half precision is safe).
//   features: this image's [H, W, C]; prev_features: [H, W, C];
//   prev_norms: [H, W] holding |F_{t-1}(q)| + 1e-8.
// The GPU kernel and the CPU kernel for half and double call this directly; the CPU
// float kernel computes the same dot products blocked over positions and then uses
// Affinity and NormaliseWindow as here.
template <typename T, typename A>
STMN_HOST_DEVICE void CoefficientsAt(const T* features, const T* prev_features,
                                     const A* prev_norms, int64_t H, int64_t W,
                                     int64_t C, int k, int64_t y, int64_t x, T* coef) {
  const int K = 2 * k + 1;
  const T* f = features + (y * W + x) * C;
  const A norm_f = NormPlusEpsilon<A>(f, C);
  A mass = A(0);
  for (int dy = -k; dy <= k; ++dy) {
    const int64_t qy = y + dy;
    for (int dx = -k; dx <= k; ++dx) {
      const int64_t qx = x + dx;
      A a = A(0);
      if (qy >= 0 && qy < H && qx >= 0 && qx < W) {  // out-of-bounds: skipped
        const int64_t q = qy * W + qx;
        a = Affinity<A>(Dot<A>(f, prev_features + q * C, C), norm_f, prev_norms[q]);
      }
      mass += a;
      coef[(dy + k) * K + (dx + k)] = static_cast<T>(a);
    }
  }
  NormaliseWindow<T, A>(mass, k, coef);
}

// Channels of the memory handled per pass in AlignAt/AlignGradAt: the partial sums
// of a block stay in registers (8 AVX registers for float) while the window's
// neighbours stream through, one contiguous block of each neighbour at a time.
constexpr int kDepthBlock = 64;

// aligned[d] = sum_o coef[o] * prev_memory(p + o)[d] for position (y, x).
template <typename T, typename A>
STMN_HOST_DEVICE void AlignAt(const T* coef, const T* prev_memory, int64_t H, int64_t W,
                              int64_t D, int k, int64_t y, int64_t x, T* aligned) {
  const int K = 2 * k + 1;
  const int dy0 = y - k < 0 ? -static_cast<int>(y) : -k;
  const int dy1 = y + k >= H ? static_cast<int>(H - 1 - y) : k;
  const int dx0 = x - k < 0 ? -static_cast<int>(x) : -k;
  const int dx1 = x + k >= W ? static_cast<int>(W - 1 - x) : k;
  for (int64_t d0 = 0; d0 < D; d0 += kDepthBlock) {
    const int64_t n = D - d0 < kDepthBlock ? D - d0 : kDepthBlock;
    A acc[kDepthBlock];
    for (int j = 0; j < kDepthBlock; ++j) acc[j] = A(0);
    for (int dy = dy0; dy <= dy1; ++dy) {
      for (int dx = dx0; dx <= dx1; ++dx) {
        const A c = static_cast<A>(coef[(dy + k) * K + (dx + k)]);
        if (c == A(0)) continue;  // most of a window is often zero after the ReLU
        const T* m = prev_memory + ((y + dy) * W + (x + dx)) * D + d0;
        if (n == kDepthBlock) {
          STMN_SIMD
          for (int j = 0; j < kDepthBlock; ++j) acc[j] += c * static_cast<A>(m[j]);
        } else {
          for (int64_t j = 0; j < n; ++j) acc[j] += c * static_cast<A>(m[j]);
        }
      }
    }
    for (int64_t j = 0; j < n; ++j) aligned[d0 + j] = static_cast<T>(acc[j]);
  }
}

// Gradient of the aligned memory with respect to prev_memory at source position
// q = (y, x): grad[d] = sum_o coef(q - o)[o] * grad_aligned(q - o)[d].
template <typename T, typename A>
STMN_HOST_DEVICE void AlignGradAt(const T* coefficients, const T* grad_aligned, int64_t H,
                                  int64_t W, int64_t D, int k, int64_t y, int64_t x,
                                  T* grad) {
  const int K = 2 * k + 1;
  const int64_t K2 = static_cast<int64_t>(K) * K;
  // p = q - o must lie inside the map: o in [q - (H-1), q] intersected with [-k, k].
  const int dy0 = y + k >= H ? static_cast<int>(y - (H - 1)) : -k;
  const int dy1 = y - k < 0 ? static_cast<int>(y) : k;
  const int dx0 = x + k >= W ? static_cast<int>(x - (W - 1)) : -k;
  const int dx1 = x - k < 0 ? static_cast<int>(x) : k;
  for (int64_t d0 = 0; d0 < D; d0 += kDepthBlock) {
    const int64_t n = D - d0 < kDepthBlock ? D - d0 : kDepthBlock;
    A acc[kDepthBlock];
    for (int j = 0; j < kDepthBlock; ++j) acc[j] = A(0);
    for (int dy = dy0; dy <= dy1; ++dy) {
      for (int dx = dx0; dx <= dx1; ++dx) {
        const int64_t p = (y - dy) * W + (x - dx);
        const A c = static_cast<A>(coefficients[p * K2 + (dy + k) * K + (dx + k)]);
        if (c == A(0)) continue;
        const T* g = grad_aligned + p * D + d0;
        if (n == kDepthBlock) {
          STMN_SIMD
          for (int j = 0; j < kDepthBlock; ++j) acc[j] += c * static_cast<A>(g[j]);
        } else {
          for (int64_t j = 0; j < n; ++j) acc[j] += c * static_cast<A>(g[j]);
        }
      }
    }
    for (int64_t j = 0; j < n; ++j) grad[d0 + j] = static_cast<T>(acc[j]);
  }
}

// Sizes of one call.
struct Dims {
  int64_t batch, height, width, channels, depth;
  int k;
  STMN_HOST_DEVICE int64_t positions() const { return batch * height * width; }
  STMN_HOST_DEVICE int64_t window() const { return static_cast<int64_t>(2 * k + 1) * (2 * k + 1); }
};

// Forward: fills `aligned` [B, H, W, D] and `coefficients` [B, H, W, (2k+1)^2].
// `prev_norms` is scratch of B*H*W accumulators.
template <typename Device, typename T>
struct MatchTransFunctor {
  void operator()(const Device& device, const Dims& dims, const T* features,
                  const T* prev_features, const T* prev_memory,
                  typename Accumulator<T>::type* prev_norms, T* aligned, T* coefficients);
};

// Backward: fills `grad_prev_memory` [B, H, W, D] from the forward's coefficients.
template <typename Device, typename T>
struct MatchTransGradFunctor {
  void operator()(const Device& device, const Dims& dims, const T* coefficients,
                  const T* grad_aligned, T* grad_prev_memory);
};

}  // namespace match_trans
}  // namespace stmn

#endif  // STMN_CUSTOM_OPS_MATCH_TRANS_MATCH_TRANS_H_
