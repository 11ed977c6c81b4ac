// CPU functors and the OpKernels of Stmn>MatchTrans and Stmn>MatchTransGrad.
//
// CPU forward paths: the generic per-position path of match_trans.h (every dtype and
// k; what STMN_MATCHTRANS_CPU_PATH=generic forces) and the blocked float path below
// (float, k <= 3, the default there).

#define EIGEN_USE_THREADS
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif

#include "match_trans.h"

#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "match_trans_functor.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/register_types.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/framework/tensor_shape.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace stmn {
namespace match_trans {

using CPUDevice = Eigen::ThreadPoolDevice;
using GPUDevice = Eigen::GpuDevice;

// Work on a range of positions [begin, end) of the flattened [B, H, W] grid.
//
// `scratch` holds 2 * B*H*W accumulators: [0, n) the norms |F_{t-1}(q)| + 1e-8,
// [n, 2n) the MemoryFlag of each M_{t-1}(q) (n = B*H*W), both filled by NormsRange.
template <typename T>
void NormsRange(const Dims& dims, const T* prev_features, const T* prev_memory,
                typename Accumulator<T>::type* scratch, int64_t begin, int64_t end) {
  using A = typename Accumulator<T>::type;
  A* memory_flags = scratch + dims.positions();
  for (int64_t i = begin; i < end; ++i) {
    scratch[i] = NormPlusEpsilon<A>(prev_features + i * dims.channels, dims.channels);
    memory_flags[i] = MemoryFlag<A>(prev_memory + i * dims.depth, dims.depth);
  }
}

template <typename T>
void ForwardRange(const Dims& dims, const T* features, const T* prev_features,
                  const T* prev_memory, const typename Accumulator<T>::type* scratch,
                  T* aligned, T* coefficients, int64_t begin, int64_t end) {
  using A = typename Accumulator<T>::type;
  const int64_t H = dims.height, W = dims.width, C = dims.channels, D = dims.depth;
  const int64_t HW = H * W, K2 = dims.window();
  const A* prev_norms = scratch;
  const A* memory_flags = scratch + dims.positions();
  for (int64_t i = begin; i < end; ++i) {
    const int64_t b = i / HW, y = (i % HW) / W, x = i % W;
    T* coef = coefficients + i * K2;
    CoefficientsAt<T, A>(features + b * HW * C, prev_features + b * HW * C,
                         prev_norms + b * HW, H, W, C, dims.k, dims.affinity_power, y, x,
                         coef);
    AlignAt<T, A>(coef, prev_memory + b * HW * D, memory_flags + b * HW, H, W, D, dims.k, y,
                  x, aligned + i * D);
  }
}

// ---------------------------------------------------------------------------------
// float on the CPU: the window's dot products blocked over pairs of positions.
//
// Per position the op reads (2k+1)^2 neighbour vectors of C channels for one dot
// product each, about one load per multiply-add, which leaves the CPU waiting on its
// caches. Two horizontally adjacent positions x, x+1 share 2k of their 2k+1
// neighbours in each row, so computing both positions' dots together reuses every
// loaded neighbour chunk for two multiply-adds and every feature chunk for 2k+1.

// Unaligned 8-float vectors (GCC vector extension: AVX in the AVX2 clone, SSE pairs
// in the baseline one).
typedef float v8f __attribute__((vector_size(32), aligned(4)));

inline float HorizontalSum(v8f v) {
  float s = 0.f;
  for (int i = 0; i < 8; ++i) s += v[i];
  return s;
}

// Dots of f0 = F(x) and f1 = F(x+1) with the KS + 1 neighbours g[0..KS] =
// F_{t-1}(x-k .. x+1+k) of one row (stride C): out0[j] = <f0, g[j]>,
// out1[j] = <f1, g[j+1]>, j in [0, KS).
template <int KS>
inline void PairDots(const float* f0, const float* f1, const float* g, int64_t C,
                     float* out0, float* out1) {
  v8f acc0[KS], acc1[KS];
  for (int j = 0; j < KS; ++j) acc0[j] = acc1[j] = v8f{};
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    const v8f a0 = *reinterpret_cast<const v8f*>(f0 + c);
    const v8f a1 = *reinterpret_cast<const v8f*>(f1 + c);
    v8f n = *reinterpret_cast<const v8f*>(g + c);
    acc0[0] += a0 * n;
    for (int j = 1; j < KS; ++j) {
      n = *reinterpret_cast<const v8f*>(g + j * C + c);
      acc0[j] += a0 * n;
      acc1[j - 1] += a1 * n;
    }
    n = *reinterpret_cast<const v8f*>(g + KS * C + c);
    acc1[KS - 1] += a1 * n;
  }
  for (int j = 0; j < KS; ++j) {
    float s0 = HorizontalSum(acc0[j]), s1 = HorizontalSum(acc1[j]);
    for (int64_t t = c; t < C; ++t) {
      s0 += f0[t] * g[j * C + t];
      s1 += f1[t] * g[(j + 1) * C + t];
    }
    out0[j] = s0;
    out1[j] = s1;
  }
}

// Dots of one feature vector f with n <= KS consecutive neighbours g[0..n) (stride C):
// out[j] = <f, g[j]>; f is loaded once for all of them.
template <int KS>
inline void RowDots(const float* f, const float* g, int n, int64_t C, float* out) {
  v8f acc[KS];
  for (int j = 0; j < KS; ++j) acc[j] = v8f{};
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    const v8f a = *reinterpret_cast<const v8f*>(f + c);
    for (int j = 0; j < KS; ++j) {
      if (j < n) acc[j] += a * *reinterpret_cast<const v8f*>(g + j * C + c);
    }
  }
  for (int j = 0; j < n; ++j) {
    float s = HorizontalSum(acc[j]);
    for (int64_t t = c; t < C; ++t) s += f[t] * g[j * C + t];
    out[j] = s;
  }
}

// Dot products of one row of features with one row of prev_features for offsets
// dx in [-k, k]: dots[x * stride + (dx + k)], for in-bounds neighbours only.
template <int KS>
void BandDots(const float* frow, const float* grow, int64_t W, int64_t C, int64_t stride,
              float* dots) {
  constexpr int k = KS / 2;
  int64_t x = 0;
  while (x < W) {
    if (x - k >= 0 && x + 1 + k < W) {
      PairDots<KS>(frow + x * C, frow + (x + 1) * C, grow + (x - k) * C, C,
                   dots + x * stride, dots + (x + 1) * stride);
      x += 2;
    } else {  // the map's left and right edges: the in-bounds part of the window
      const int dx0 = x - k < 0 ? -static_cast<int>(x) : -k;
      const int dx1 = x + k >= W ? static_cast<int>(W - 1 - x) : k;
      RowDots<KS>(frow + x * C, grow + (x + dx0) * C, dx1 - dx0 + 1, C,
                  dots + x * stride + dx0 + k);
      x += 1;
    }
  }
}

template <int KS>
void ForwardRowsFloat(const Dims& dims, const float* features, const float* prev_features,
                      const float* prev_memory, const float* scratch, float* aligned,
                      float* coefficients, int64_t row_begin, int64_t row_end) {
  constexpr int k = KS / 2;
  constexpr int K2 = KS * KS;
  const int64_t H = dims.height, W = dims.width, C = dims.channels, D = dims.depth;
  const int64_t HW = H * W;
  const float power = dims.affinity_power;
  const float* prev_norms = scratch;
  const float* memory_flags = scratch + dims.positions();
  std::vector<float> dots(W * K2), norms(W);
  for (int64_t row = row_begin; row < row_end; ++row) {  // row = b * H + y
    const int64_t b = row / H, y = row % H;
    const float* frow = features + row * W * C;
    for (int64_t x = 0; x < W; ++x) norms[x] = NormPlusEpsilon<float>(frow + x * C, C);
    for (int dy = -k; dy <= k; ++dy) {
      if (y + dy < 0 || y + dy >= H) continue;
      BandDots<KS>(frow, prev_features + (row + dy) * W * C, W, C, K2,
                   dots.data() + (dy + k) * KS);
    }
    for (int64_t x = 0; x < W; ++x) {
      const int64_t i = row * W + x;
      float* coef = coefficients + i * K2;
      float mass = 0.f;
      bool finite = IsFinite(norms[x]);
      for (int dy = -k; dy <= k; ++dy) {
        for (int dx = -k; dx <= k; ++dx) {
          const int o = (dy + k) * KS + dx + k;
          float a = 0.f;
          if (y + dy >= 0 && y + dy < H && x + dx >= 0 && x + dx < W) {
            const float norm_q = prev_norms[b * HW + (y + dy) * W + x + dx];
            a = Affinity<float>(dots[x * K2 + o], norms[x], norm_q);
            finite = finite && IsFinite(norm_q);
          }
          mass += Sharpen(a, power);
          coef[o] = a;
        }
      }
      NormaliseWindow<float, float>(mass, k, power, coef);
      if (!finite) PoisonWindow<float>(H, W, k, y, x, coef);
      AlignAt<float, float>(coef, prev_memory + b * HW * D, memory_flags + b * HW, H, W, D,
                            k, y, x, aligned + i * D);
    }
  }
}

template <typename T>
void GradRange(const Dims& dims, const T* coefficients, const T* grad_aligned,
               T* grad_prev_memory, int64_t begin, int64_t end) {
  using A = typename Accumulator<T>::type;
  const int64_t H = dims.height, W = dims.width, D = dims.depth;
  const int64_t HW = H * W, K2 = dims.window();
  for (int64_t i = begin; i < end; ++i) {
    const int64_t b = i / HW, y = (i % HW) / W, x = i % W;
    AlignGradAt<T, A>(coefficients + b * HW * K2, grad_aligned + b * HW * D, H, W, D,
                      dims.k, y, x, grad_prev_memory + i * D);
  }
}

// Run-time dispatch: the library is compiled for baseline x86-64 and these entry
// points get an AVX2+FMA clone that the loader picks on CPUs that have it (GCC
// function multi-versioning), instead of -march=native at build time.
#if defined(STMN_MULTIVERSION) && defined(__x86_64__) && !defined(__clang__)
#define STMN_CLONES __attribute__((target_clones("fma", "default"), flatten))
#else
#define STMN_CLONES
#endif

#define STMN_DEFINE_DISPATCH(T)                                                          \
  STMN_CLONES void NormsDispatch(const Dims& dims, const T* prev_features,               \
                                 const T* prev_memory, Accumulator<T>::type* scratch,    \
                                 int64_t begin, int64_t end) {                           \
    NormsRange<T>(dims, prev_features, prev_memory, scratch, begin, end);                \
  }                                                                                      \
  STMN_CLONES void ForwardDispatch(const Dims& dims, const T* features,                  \
                                   const T* prev_features, const T* prev_memory,         \
                                   const Accumulator<T>::type* scratch, T* aligned,      \
                                   T* coefficients, int64_t begin, int64_t end) {        \
    ForwardRange<T>(dims, features, prev_features, prev_memory, scratch, aligned,        \
                    coefficients, begin, end);                                           \
  }                                                                                      \
  STMN_CLONES void GradDispatch(const Dims& dims, const T* coefficients,                 \
                                const T* grad_aligned, T* grad_prev_memory,              \
                                int64_t begin, int64_t end) {                            \
    GradRange<T>(dims, coefficients, grad_aligned, grad_prev_memory, begin, end);        \
  }
STMN_DEFINE_DISPATCH(Eigen::half)
STMN_DEFINE_DISPATCH(float)
STMN_DEFINE_DISPATCH(double)
#undef STMN_DEFINE_DISPATCH

// float forward over whole rows [row_begin, row_end) of the [B, H] grid; false when
// k has no blocked kernel (then the generic per-position path runs).
STMN_CLONES bool ForwardRowsFloatDispatch(const Dims& dims, const float* features,
                                          const float* prev_features, const float* prev_memory,
                                          const float* scratch, float* aligned,
                                          float* coefficients, int64_t row_begin,
                                          int64_t row_end) {
  switch (dims.k) {
#define STMN_CASE(KS)                                                                   \
  case KS / 2:                                                                          \
    ForwardRowsFloat<KS>(dims, features, prev_features, prev_memory, scratch, aligned,    \
                         coefficients, row_begin, row_end);                             \
    return true;
    STMN_CASE(1)
    STMN_CASE(3)
    STMN_CASE(5)
    STMN_CASE(7)
#undef STMN_CASE
    default:
      return false;
  }
}

// Positions are handed to the thread pool in contiguous row-major ranges, so the
// (2k+1) rows of prev_features that a row of positions reads stay in cache while
// the neighbouring rows, which share most of them, are processed.
template <typename T>
struct MatchTransFunctor<CPUDevice, T> {
  ::tensorflow::Status operator()(const CPUDevice& device, CpuPath path, const Dims& dims,
                                  const T* features, const T* prev_features,
                                  const T* prev_memory,
                                  typename Accumulator<T>::type* scratch, T* aligned,
                                  T* coefficients) {
    using A = typename Accumulator<T>::type;
    const int64_t C = dims.channels, D = dims.depth, K2 = dims.window();
    device.parallelFor(dims.positions(),
                       Eigen::TensorOpCost((C + D) * sizeof(T), 2 * sizeof(A), 2.0 * (C + D)),
                       [&](Eigen::Index begin, Eigen::Index end) {
                         NormsDispatch(dims, prev_features, prev_memory, scratch, begin, end);
                       });
    const Eigen::TensorOpCost position_cost(sizeof(T) * (C * (K2 + 1) + D * K2),
                                            sizeof(T) * (D + K2),
                                            2.0 * C * (K2 + 1) + 2.0 * D * K2);
    if constexpr (std::is_same<T, float>::value) {
      if (path == CpuPath::kFast && dims.k <= 3) {
        // Whole rows per task: the blocked float kernel works a row at a time.
        device.parallelFor(dims.batch * dims.height, position_cost * dims.width,
                           [&](Eigen::Index begin, Eigen::Index end) {
                             ForwardRowsFloatDispatch(dims, features, prev_features,
                                                      prev_memory, scratch, aligned,
                                                      coefficients, begin, end);
                           });
        return ::tensorflow::OkStatus();
      }
    }
    device.parallelFor(dims.positions(), position_cost,
                       [&](Eigen::Index begin, Eigen::Index end) {
                         ForwardDispatch(dims, features, prev_features, prev_memory,
                                         scratch, aligned, coefficients, begin, end);
                       });
    return ::tensorflow::OkStatus();
  }
};

template <typename T>
struct MatchTransGradFunctor<CPUDevice, T> {
  ::tensorflow::Status operator()(const CPUDevice& device, const Dims& dims,
                                  const T* coefficients, const T* grad_aligned,
                                  T* grad_prev_memory) {
    const int64_t D = dims.depth, K2 = dims.window();
    device.parallelFor(
        dims.positions(),
        Eigen::TensorOpCost(sizeof(T) * K2 * (D + 1), sizeof(T) * D, 2.0 * D * K2),
        [&](Eigen::Index begin, Eigen::Index end) {
          GradDispatch(dims, coefficients, grad_aligned, grad_prev_memory, begin, end);
        });
    return ::tensorflow::OkStatus();
  }
};

}  // namespace match_trans

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
namespace errors = ::tensorflow::errors;

namespace {

void ReadK(OpKernelConstruction* ctx, int* k) {
  OP_REQUIRES_OK(ctx, ctx->GetAttr("k", k));
  OP_REQUIRES(ctx, *k >= 0, errors::InvalidArgument("MatchTrans: k must be >= 0, got ", *k));
}

void ReadAffinityPower(OpKernelConstruction* ctx, float* power) {
  OP_REQUIRES_OK(ctx, ctx->GetAttr("affinity_power", power));
  OP_REQUIRES(ctx, std::isfinite(*power) && *power > 0.f,
              errors::InvalidArgument(
                  "MatchTrans: affinity_power must be a finite number > 0, got ", *power));
}

// STMN_MATCHTRANS_CPU_PATH, read when a CPU kernel is constructed: "auto" (the
// default, unset or empty) and "fast" take the blocked float path where it exists,
// "generic" forces the per-position path of match_trans.h for every dtype and k.
void ReadCpuPath(OpKernelConstruction* ctx, match_trans::CpuPath* path) {
  const char* value = std::getenv("STMN_MATCHTRANS_CPU_PATH");
  const std::string v = value == nullptr ? "" : value;
  if (v.empty() || v == "auto" || v == "fast") {
    *path = match_trans::CpuPath::kFast;
  } else if (v == "generic") {
    *path = match_trans::CpuPath::kGeneric;
  } else {
    ctx->CtxFailure(errors::InvalidArgument(
        "MatchTrans: the environment variable STMN_MATCHTRANS_CPU_PATH must be auto, "
        "generic or fast, got '", v, "'"));
  }
}

bool SameBHW(const TensorShape& a, const TensorShape& b) {
  return a.dim_size(0) == b.dim_size(0) && a.dim_size(1) == b.dim_size(1) &&
         a.dim_size(2) == b.dim_size(2);
}

}  // namespace

template <typename Device, typename T>
class MatchTransOp : public OpKernel {
 public:
  explicit MatchTransOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    ReadK(ctx, &k_);
    ReadAffinityPower(ctx, &affinity_power_);
    if (std::is_same<Device, match_trans::CPUDevice>::value) ReadCpuPath(ctx, &path_);
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& features = ctx->input(0);
    const Tensor& prev_features = ctx->input(1);
    const Tensor& prev_memory = ctx->input(2);
    const char* names[] = {"features", "prev_features", "prev_memory"};
    for (int i = 0; i < 3; ++i) {
      OP_REQUIRES(ctx, ctx->input(i).dims() == 4,
                  errors::InvalidArgument("MatchTrans: ", names[i],
                                          " must be rank 4 [B, H, W, C], got shape ",
                                          ctx->input(i).shape().DebugString()));
    }
    OP_REQUIRES(ctx,
                SameBHW(features.shape(), prev_features.shape()) &&
                    SameBHW(features.shape(), prev_memory.shape()),
                errors::InvalidArgument(
                    "MatchTrans: features, prev_features and prev_memory must agree in "
                    "batch, height and width, got ",
                    features.shape().DebugString(), ", ", prev_features.shape().DebugString(),
                    " and ", prev_memory.shape().DebugString()));
    OP_REQUIRES(ctx, features.dim_size(3) == prev_features.dim_size(3),
                errors::InvalidArgument(
                    "MatchTrans: features and prev_features must have the same depth, got ",
                    features.shape().DebugString(), " and ",
                    prev_features.shape().DebugString()));

    match_trans::Dims dims{features.dim_size(0), features.dim_size(1), features.dim_size(2),
                           features.dim_size(3), prev_memory.dim_size(3), k_, affinity_power_};
    Tensor* aligned = nullptr;
    Tensor* coefficients = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, prev_memory.shape(), &aligned));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            1,
                            TensorShape({dims.batch, dims.height, dims.width, dims.window()}),
                            &coefficients));
    if (dims.positions() == 0) return;  // empty batch or map: empty results

    using A = typename match_trans::Accumulator<T>::type;
    Tensor scratch;  // the previous features' norms, then the memory's finiteness flags
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DataTypeToEnum<A>::value,
                                           TensorShape({2 * dims.positions()}), &scratch));
    OP_REQUIRES_OK(ctx, match_trans::MatchTransFunctor<Device, T>()(
                            ctx->eigen_device<Device>(), path_, dims,
                            features.flat<T>().data(), prev_features.flat<T>().data(),
                            prev_memory.flat<T>().data(), scratch.flat<A>().data(),
                            aligned->flat<T>().data(), coefficients->flat<T>().data()));
  }

 private:
  int k_;
  float affinity_power_;
  match_trans::CpuPath path_ = match_trans::CpuPath::kFast;
};

template <typename Device, typename T>
class MatchTransGradOp : public OpKernel {
 public:
  explicit MatchTransGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) { ReadK(ctx, &k_); }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& coefficients = ctx->input(0);
    const Tensor& grad_aligned = ctx->input(1);
    OP_REQUIRES(ctx, coefficients.dims() == 4 && grad_aligned.dims() == 4,
                errors::InvalidArgument(
                    "MatchTransGrad: coefficients and grad_aligned_memory must be rank 4, got ",
                    coefficients.shape().DebugString(), " and ",
                    grad_aligned.shape().DebugString()));
    const int64_t side = 2 * static_cast<int64_t>(k_) + 1;
    OP_REQUIRES(ctx,
                SameBHW(coefficients.shape(), grad_aligned.shape()) &&
                    coefficients.dim_size(3) == side * side,
                errors::InvalidArgument("MatchTransGrad: coefficients must be [B, H, W, ",
                                        side * side, "] matching grad_aligned_memory, got ",
                                        coefficients.shape().DebugString(), " and ",
                                        grad_aligned.shape().DebugString()));
    match_trans::Dims dims{grad_aligned.dim_size(0), grad_aligned.dim_size(1),
                           grad_aligned.dim_size(2), 0, grad_aligned.dim_size(3), k_};
    Tensor* grad = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, grad_aligned.shape(), &grad));
    if (dims.positions() == 0) return;
    OP_REQUIRES_OK(ctx, match_trans::MatchTransGradFunctor<Device, T>()(
                            ctx->eigen_device<Device>(), dims,
                            coefficients.flat<T>().data(), grad_aligned.flat<T>().data(),
                            grad->flat<T>().data()));
  }

 private:
  int k_;
};

// The forward and gradient kernels of one device type and element type.
#define REGISTER_KERNELS(DEVICE_TYPE, DEVICE_CLASS, T)                                 \
  REGISTER_KERNEL_BUILDER(                                                              \
      Name("Stmn>MatchTrans").Device(::tensorflow::DEVICE_TYPE).TypeConstraint<T>("T"), \
      MatchTransOp<DEVICE_CLASS, T>);                                                   \
  REGISTER_KERNEL_BUILDER(Name("Stmn>MatchTransGrad")                                   \
                              .Device(::tensorflow::DEVICE_TYPE)                        \
                              .TypeConstraint<T>("T"),                                  \
                          MatchTransGradOp<DEVICE_CLASS, T>);

#define REGISTER_CPU(T) REGISTER_KERNELS(DEVICE_CPU, match_trans::CPUDevice, T)
REGISTER_CPU(Eigen::half);
REGISTER_CPU(float);
REGISTER_CPU(double);
#undef REGISTER_CPU

#if GOOGLE_CUDA
namespace match_trans {
#define DECLARE_GPU(T)                                     \
  extern template struct MatchTransFunctor<GPUDevice, T>; \
  extern template struct MatchTransGradFunctor<GPUDevice, T>;
DECLARE_GPU(Eigen::half);
DECLARE_GPU(float);
DECLARE_GPU(double);
#undef DECLARE_GPU
}  // namespace match_trans

#define REGISTER_GPU(T) REGISTER_KERNELS(DEVICE_GPU, match_trans::GPUDevice, T)
REGISTER_GPU(Eigen::half);
REGISTER_GPU(float);
REGISTER_GPU(double);
#undef REGISTER_GPU
#endif  // GOOGLE_CUDA
#undef REGISTER_KERNELS

}  // namespace stmn
