// MatchTrans (Xiao & Lee, ECCV 2018, Sec. 3.3) as the authors implemented it.
//
// For every position p = (y, x) and offset o = (dy, dx) in [-k, k]^2 whose neighbour
// q = p + o lies inside the map:
//
//   a(o)  = max(0, <F_t(p), F_{t-1}(q)> / ((|F_t(p)| + 1e-8) (|F_{t-1}(q)| + 1e-8)))^power
//   mass  = sum_o a(o)
//   M'(p) = sum_o a(o) / mass * M_{t-1}(q)        if mass >= 1e-7
//   M'(p) = M_{t-1}(p)                             otherwise
//
// `power` (the op's attr affinity_power) is 1 in the authors' code; a larger power
// sharpens the window where every cosine is positive (non-negative features make the
// ReLU'd cosines nearly uniform). The 1e-7 threshold applies to the powered
// affinities. With power == 1 no pow is evaluated, so the numbers are the authors'.
//
// Out-of-bounds neighbours are skipped, not zero padded, and their coefficient is 0.
// In the fallback case the coefficients are a one-hot at o = (0, 0), so that
// M' = sum_o coef(o) M_{t-1}(p + o) holds everywhere and the gradient with respect to
// the memory is the transpose of that sum. As in the authors' code, no gradient flows
// into the features through the coefficients.
//
// Non-finite input (the same rule in the pure-TF twin, stmn_tf/ops/match_trans_tf.py):
//   - the coefficients of p are NaN at every in-bounds offset (0 out of bounds) when
//     the squared norm of F_t(p) or of any in-bounds F_{t-1}(q) is not finite (a NaN
//     or an Inf in the vector, or a sum of squares past the accumulator's range);
//   - the aligned memory of p is NaN in all D channels when its coefficients are, or
//     when any in-bounds M_{t-1}(q) holds a NaN or an Inf (whatever its coefficient).
// Everywhere else the output is what the formula above gives: one bad cell never
// changes positions whose window does not contain it.
//
// Layout: NHWC. features, prev_features: [B, H, W, C]; prev_memory: [B, H, W, D];
// coefficients: [B, H, W, (2k+1)^2], offset (dy, dx) at index (dy+k)*(2k+1) + (dx+k).
//
// This header includes no TensorFlow or Eigen header: the CPU kernels (with
// T = Eigen::half, float, double), the CUDA kernels in match_trans_cuda.cu (T = __half,
// float, double) and the standalone GPU check (gpu_check/) all compile it.
//
// Which functions the CUDA kernels share with the CPU kernels, precisely:
//   shared:   Dims, Accumulator, NormFromSquaredSum, Affinity, Sharpen, IsFinite,
//             NonFiniteFlag, NotANumber, NormalisedCoefficient, ForwardWindow,
//             GradWindow (the in-bounds offset ranges), kNormEpsilon, kMinMass. The CUDA kernels call these for every position.
//   CPU only: Dot, NormPlusEpsilon, NormaliseWindow, CoefficientsAt, AlignAt,
//             AlignGradAt (the generic per-position path), ReferenceForward and
//             ReferenceBackward (that path over a batch on one thread), and the
//             blocked float path in match_trans_kernels.cc.
//             The CUDA kernels compute the same sums with their lanes over channels
//             and a warp reduction instead, in the same order of offsets.
// The generic path is what STMN_MATCHTRANS_CPU_PATH=generic forces on the CPU, and
// what the GPU check compiles for the host as the reference of the CUDA kernels.

#ifndef STMN_CUSTOM_OPS_MATCH_TRANS_MATCH_TRANS_H_
#define STMN_CUSTOM_OPS_MATCH_TRANS_MATCH_TRANS_H_

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define STMN_HOST_DEVICE __host__ __device__ inline
#else
#define STMN_HOST_DEVICE inline
#endif

// Reductions over channels in the generic path: vectorised on the CPU (compiled with
// -fopenmp-simd); the pragmas are dropped in device code, which never runs this path.
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

// Sizes of one call, and the power of the affinities (1: the authors' formula).
struct Dims {
  int64_t batch, height, width, channels, depth;
  int k;
  float affinity_power = 1.f;
  STMN_HOST_DEVICE int64_t positions() const { return batch * height * width; }
  STMN_HOST_DEVICE int64_t window() const {
    return static_cast<int64_t>(2 * k + 1) * (2 * k + 1);
  }
};

// ---------------------------------------------------------------------------------
// Shared by the CPU and the CUDA kernels.

// |v| + 1e-8 from the sum of squares: the denominator factor of the cosine in the
// authors' code.
template <typename A>
STMN_HOST_DEVICE A NormFromSquaredSum(A squared_sum) {
  return sqrt(squared_sum) + A(kNormEpsilon);
}

// a^power for a >= 0; power == 1 returns a itself (the authors' numbers, no pow).
template <typename A>
STMN_HOST_DEVICE A Sharpen(A a, float power) {
  if (power == 1.f) return a;
#if defined(__CUDA_ARCH__)
  return pow(a, static_cast<A>(power));
#else
  return std::pow(a, static_cast<A>(power));
#endif
}

// The affinity of the authors' code: the ReLU'd cosine, with each norm + 1e-8. The
// kernels store it (in [0, 1], so half precision is safe) and raise it to the power
// when they sum the window's mass and when they normalise (NormalisedCoefficient):
// a powered affinity stored in half would lose its digits below 6e-5.
template <typename A>
STMN_HOST_DEVICE A Affinity(A dot, A norm_f, A norm_q) {
  const A a = dot / (norm_f * norm_q);
  return a > A(0) ? a : A(0);
}

// True for finite v (NaN and +-Inf give NaN in v - v). The library is built without
// -ffast-math, which would fold this to true.
template <typename A>
STMN_HOST_DEVICE bool IsFinite(A v) {
  return v - v == A(0);
}

// The finiteness flag of one memory vector from the sum of (m - m) over its
// channels: 0 when every channel is finite, NaN otherwise.
template <typename A>
STMN_HOST_DEVICE bool NonFiniteFlag(A flag) {
  return !(flag == A(0));
}

template <typename A>
STMN_HOST_DEVICE A NotANumber() {
  return static_cast<A>(NAN);
}

// One normalised coefficient from its affinity as stored in T (out-of-bounds
// offsets store 0), raised to `power`, and the window's mass (the sum of the powered
// unrounded affinities); with no mass the memory is kept as it is: a one-hot at the
// centre.
template <typename T, typename A>
STMN_HOST_DEVICE T NormalisedCoefficient(T affinity, A mass, bool centre, float power) {
  if (mass >= A(kMinMass)) {
    return static_cast<T>(Sharpen(static_cast<A>(affinity), power) * (A(1) / mass));
  }
  return static_cast<T>(centre ? A(1) : A(0));
}

// In-bounds offsets d in [*lo, *hi] of a window of radius k around y on an axis of
// n cells: 0 <= y + d < n (the neighbours that position y reads in the forward).
STMN_HOST_DEVICE void ForwardWindow(int64_t y, int64_t n, int k, int* lo, int* hi) {
  *lo = y - k < 0 ? -static_cast<int>(y) : -k;
  *hi = y + k >= n ? static_cast<int>(n - 1 - y) : k;
}

// Offsets d in [*lo, *hi] with 0 <= y - d < n: the positions p = y - d whose window
// reads source cell y, for the gradient with respect to the memory.
STMN_HOST_DEVICE void GradWindow(int64_t y, int64_t n, int k, int* lo, int* hi) {
  *lo = y + k >= n ? static_cast<int>(y - (n - 1)) : -k;
  *hi = y - k < 0 ? static_cast<int>(y) : k;
}

// ---------------------------------------------------------------------------------
// The generic per-position path (CPU, and the GPU check's host reference).

template <typename A, typename T>
inline A Dot(const T* __restrict__ a, const T* __restrict__ b, int64_t n) {
  A acc = A(0);
  STMN_SIMD_REDUCE
  for (int64_t i = 0; i < n; ++i) {
    acc += static_cast<A>(a[i]) * static_cast<A>(b[i]);
  }
  return acc;
}

template <typename A, typename T>
inline A NormPlusEpsilon(const T* v, int64_t n) {
  return NormFromSquaredSum<A>(Dot<A>(v, v, n));
}

// Normalises a window of affinities (in `coef`, [(2k+1)^2], out-of-bounds entries 0)
// raised to `power` by `mass`, the sum of the powered affinities.
template <typename T, typename A>
inline void NormaliseWindow(A mass, int k, float power, T* coef) {
  const int K = 2 * k + 1;
  for (int i = 0; i < K * K; ++i) {
    coef[i] = NormalisedCoefficient<T, A>(coef[i], mass, i == k * K + k, power);
  }
}

// NaN at the in-bounds offsets of the window of (y, x) (the non-finite rule above);
// the out-of-bounds entries stay 0, so the memory gradient of cells outside the
// window is not touched.
template <typename T>
inline void PoisonWindow(int64_t H, int64_t W, int k, int64_t y, int64_t x, T* coef) {
  const int K = 2 * k + 1;
  int dy0, dy1, dx0, dx1;
  ForwardWindow(y, H, k, &dy0, &dy1);
  ForwardWindow(x, W, k, &dx0, &dx1);
  for (int dy = dy0; dy <= dy1; ++dy) {
    for (int dx = dx0; dx <= dx1; ++dx) coef[(dy + k) * K + (dx + k)] = NotANumber<T>();
  }
}

// The sum of (m - m) over one memory vector's D channels: its NonFiniteFlag input.
template <typename A, typename T>
inline A MemoryFlag(const T* m, int64_t D) {
  A acc = A(0);
  STMN_SIMD_REDUCE
  for (int64_t i = 0; i < D; ++i) acc += static_cast<A>(m[i]) - static_cast<A>(m[i]);
  return acc;
}

// True when a memory vector in the in-bounds window of (y, x) is not finite
// (`memory_flags`: this image's [H, W] of MemoryFlag).
template <typename A>
inline bool MemoryWindowNonFinite(const A* memory_flags, int64_t H, int64_t W, int k,
                                  int64_t y, int64_t x) {
  int dy0, dy1, dx0, dx1;
  ForwardWindow(y, H, k, &dy0, &dy1);
  ForwardWindow(x, W, k, &dx0, &dx1);
  bool bad = false;
  for (int dy = dy0; dy <= dy1; ++dy) {
    for (int dx = dx0; dx <= dx1; ++dx) {
      bad = bad || NonFiniteFlag(memory_flags[(y + dy) * W + (x + dx)]);
    }
  }
  return bad;
}

// Writes the normalised coefficients of position (y, x) to `coef` ([(2k+1)^2]);
// `coef` doubles as scratch for the affinities (in [0, 1], so half precision is safe).
// NaN at the in-bounds offsets when a feature norm in the window is not finite.
//   features: this image's [H, W, C]; prev_features: [H, W, C];
//   prev_norms: [H, W] holding |F_{t-1}(q)| + 1e-8.
// The CPU kernel for half and double (and for float with
// STMN_MATCHTRANS_CPU_PATH=generic or k > 3) calls this; the CPU float kernel
// computes the same dot products blocked over positions and then uses Affinity and
// NormaliseWindow as here.
template <typename T, typename A>
inline void CoefficientsAt(const T* features, const T* prev_features, const A* prev_norms,
                           int64_t H, int64_t W, int64_t C, int k, float power, int64_t y,
                           int64_t x, T* coef) {
  const int K = 2 * k + 1;
  const T* f = features + (y * W + x) * C;
  const A norm_f = NormPlusEpsilon<A>(f, C);
  bool finite = IsFinite(norm_f);
  A mass = A(0);
  for (int dy = -k; dy <= k; ++dy) {
    const int64_t qy = y + dy;
    for (int dx = -k; dx <= k; ++dx) {
      const int64_t qx = x + dx;
      A a = A(0);
      if (qy >= 0 && qy < H && qx >= 0 && qx < W) {  // out-of-bounds: skipped
        const int64_t q = qy * W + qx;
        a = Affinity<A>(Dot<A>(f, prev_features + q * C, C), norm_f, prev_norms[q]);
        finite = finite && IsFinite(prev_norms[q]);
      }
      mass += Sharpen(a, power);
      coef[(dy + k) * K + (dx + k)] = static_cast<T>(a);
    }
  }
  NormaliseWindow<T, A>(mass, k, power, coef);
  if (!finite) PoisonWindow<T>(H, W, k, y, x, coef);
}

// Channels of the memory handled per pass in AlignAt/AlignGradAt: the partial sums
// of a block stay in registers (8 AVX registers for float) while the window's
// neighbours stream through, one contiguous block of each neighbour at a time.
constexpr int kDepthBlock = 64;

// out[d] = sum over the offsets (dy, dx) in [dy0, dy1] x [dx0, dx1] of
// c(dy, dx) * v(dy, dx)[d], d < D, where `term(dy, dx, &v)` returns c and points v at a
// D-vector: kDepthBlock channels at a time, so that the partial sums stay in registers.
template <typename T, typename A, typename Term>
inline void WeightedWindowSum(int dy0, int dy1, int dx0, int dx1, int64_t D, Term term,
                              T* out) {
  for (int64_t d0 = 0; d0 < D; d0 += kDepthBlock) {
    const int64_t n = D - d0 < kDepthBlock ? D - d0 : kDepthBlock;
    A acc[kDepthBlock];
    for (int j = 0; j < kDepthBlock; ++j) acc[j] = A(0);
    for (int dy = dy0; dy <= dy1; ++dy) {
      for (int dx = dx0; dx <= dx1; ++dx) {
        const T* v = nullptr;
        const A c = term(dy, dx, &v);
        if (c == A(0)) continue;  // most of a window is often zero after the ReLU
        v += d0;
        if (n == kDepthBlock) {
          STMN_SIMD
          for (int j = 0; j < kDepthBlock; ++j) acc[j] += c * static_cast<A>(v[j]);
        } else {
          for (int64_t j = 0; j < n; ++j) acc[j] += c * static_cast<A>(v[j]);
        }
      }
    }
    for (int64_t j = 0; j < n; ++j) out[d0 + j] = static_cast<T>(acc[j]);
  }
}

// aligned[d] = sum_o coef[o] * prev_memory(p + o)[d] for position (y, x); all NaN
// when a memory vector of the window is not finite (`memory_flags`: this image's
// [H, W] of MemoryFlag), even where its coefficient is 0 and the sum skips it.
template <typename T, typename A>
inline void AlignAt(const T* coef, const T* prev_memory, const A* memory_flags, int64_t H,
                    int64_t W, int64_t D, int k, int64_t y, int64_t x, T* aligned) {
  const int K = 2 * k + 1;
  if (MemoryWindowNonFinite(memory_flags, H, W, k, y, x)) {
    for (int64_t d = 0; d < D; ++d) aligned[d] = NotANumber<T>();
    return;
  }
  int dy0, dy1, dx0, dx1;
  ForwardWindow(y, H, k, &dy0, &dy1);
  ForwardWindow(x, W, k, &dx0, &dx1);
  WeightedWindowSum<T, A>(dy0, dy1, dx0, dx1, D, [&](int dy, int dx, const T** v) {
    *v = prev_memory + ((y + dy) * W + (x + dx)) * D;
    return static_cast<A>(coef[(dy + k) * K + (dx + k)]);
  }, aligned);
}

// Gradient of the aligned memory with respect to prev_memory at source position
// q = (y, x): grad[d] = sum_o coef(q - o)[o] * grad_aligned(q - o)[d].
template <typename T, typename A>
inline void AlignGradAt(const T* coefficients, const T* grad_aligned, int64_t H, int64_t W,
                        int64_t D, int k, int64_t y, int64_t x, T* grad) {
  const int K = 2 * k + 1;
  const int64_t K2 = static_cast<int64_t>(K) * K;
  int dy0, dy1, dx0, dx1;
  GradWindow(y, H, k, &dy0, &dy1);
  GradWindow(x, W, k, &dx0, &dx1);
  WeightedWindowSum<T, A>(dy0, dy1, dx0, dx1, D, [&](int dy, int dx, const T** v) {
    const int64_t p = (y - dy) * W + (x - dx);
    *v = grad_aligned + p * D;
    return static_cast<A>(coefficients[p * K2 + (dy + k) * K + (dx + k)]);
  }, grad);
}

// Generic path over a whole batch, for the GPU check's host reference: the same
// per-position calls as the CPU kernel's ForwardRange/GradRange, on one thread.
// `scratch`: 2 * B*H*W accumulators, the norms of prev_features then the MemoryFlag
// of each prev_memory vector.
template <typename T>
void ReferenceForward(const Dims& dims, const T* features, const T* prev_features,
                      const T* prev_memory, typename Accumulator<T>::type* scratch,
                      T* aligned, T* coefficients) {
  using A = typename Accumulator<T>::type;
  const int64_t H = dims.height, W = dims.width, C = dims.channels, D = dims.depth;
  const int64_t HW = H * W, K2 = dims.window(), n = dims.positions();
  A* prev_norms = scratch;
  A* memory_flags = scratch + n;
  for (int64_t i = 0; i < n; ++i) {
    prev_norms[i] = NormPlusEpsilon<A>(prev_features + i * C, C);
    memory_flags[i] = MemoryFlag<A>(prev_memory + i * D, D);
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = i / HW, y = (i % HW) / W, x = i % W;
    CoefficientsAt<T, A>(features + b * HW * C, prev_features + b * HW * C,
                         prev_norms + b * HW, H, W, C, dims.k, dims.affinity_power, y, x,
                         coefficients + i * K2);
    AlignAt<T, A>(coefficients + i * K2, prev_memory + b * HW * D, memory_flags + b * HW, H,
                  W, D, dims.k, y, x, aligned + i * D);
  }
}

template <typename T>
void ReferenceBackward(const Dims& dims, const T* coefficients, const T* grad_aligned,
                       T* grad_prev_memory) {
  using A = typename Accumulator<T>::type;
  const int64_t H = dims.height, W = dims.width, D = dims.depth;
  const int64_t HW = H * W, K2 = dims.window();
  for (int64_t i = 0; i < dims.positions(); ++i) {
    const int64_t b = i / HW, y = (i % HW) / W, x = i % W;
    AlignGradAt<T, A>(coefficients + b * HW * K2, grad_aligned + b * HW * D, H, W, D,
                      dims.k, y, x, grad_prev_memory + i * D);
  }
}

}  // namespace match_trans
}  // namespace stmn

#endif  // STMN_CUSTOM_OPS_MATCH_TRANS_MATCH_TRANS_H_
