// CUDA kernels of Stmn>MatchTrans: one thread per position, calling the same
// per-position functions as the CPU kernel (match_trans.h).

#if GOOGLE_CUDA

#define EIGEN_USE_GPU

#include "match_trans.h"

#include "unsupported/Eigen/CXX11/Tensor"

namespace stmn {
namespace match_trans {

using GPUDevice = Eigen::GpuDevice;

namespace {

constexpr int kThreads = 256;

inline int Blocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 65535 ? blocks : 65535);
}

template <typename T, typename A>
__global__ void PrevNormsKernel(Dims dims, const T* prev_features, A* prev_norms) {
  const int64_t n = dims.positions();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    prev_norms[i] = NormPlusEpsilon<A>(prev_features + i * dims.channels, dims.channels);
  }
}

template <typename T, typename A>
__global__ void ForwardKernel(Dims dims, const T* features, const T* prev_features,
                              const T* prev_memory, const A* prev_norms, T* aligned,
                              T* coefficients) {
  const int64_t H = dims.height, W = dims.width, C = dims.channels, D = dims.depth;
  const int64_t HW = H * W, K2 = dims.window();
  const int64_t n = dims.positions();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t b = i / HW, y = (i % HW) / W, x = i % W;
    T* coef = coefficients + i * K2;
    CoefficientsAt<T, A>(features + b * HW * C, prev_features + b * HW * C,
                         prev_norms + b * HW, H, W, C, dims.k, y, x, coef);
    AlignAt<T, A>(coef, prev_memory + b * HW * D, H, W, D, dims.k, y, x, aligned + i * D);
  }
}

template <typename T, typename A>
__global__ void GradKernel(Dims dims, const T* coefficients, const T* grad_aligned,
                           T* grad_prev_memory) {
  const int64_t H = dims.height, W = dims.width, D = dims.depth;
  const int64_t HW = H * W, K2 = dims.window();
  const int64_t n = dims.positions();
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t b = i / HW, y = (i % HW) / W, x = i % W;
    AlignGradAt<T, A>(coefficients + b * HW * K2, grad_aligned + b * HW * D, H, W, D,
                      dims.k, y, x, grad_prev_memory + i * D);
  }
}

}  // namespace

template <typename T>
struct MatchTransFunctor<GPUDevice, T> {
  void operator()(const GPUDevice& device, const Dims& dims, const T* features,
                  const T* prev_features, const T* prev_memory,
                  typename Accumulator<T>::type* prev_norms, T* aligned, T* coefficients) {
    using A = typename Accumulator<T>::type;
    const int blocks = Blocks(dims.positions());
    PrevNormsKernel<T, A><<<blocks, kThreads, 0, device.stream()>>>(dims, prev_features,
                                                                    prev_norms);
    ForwardKernel<T, A><<<blocks, kThreads, 0, device.stream()>>>(
        dims, features, prev_features, prev_memory, prev_norms, aligned, coefficients);
  }
};

template <typename T>
struct MatchTransGradFunctor<GPUDevice, T> {
  void operator()(const GPUDevice& device, const Dims& dims, const T* coefficients,
                  const T* grad_aligned, T* grad_prev_memory) {
    using A = typename Accumulator<T>::type;
    GradKernel<T, A><<<Blocks(dims.positions()), kThreads, 0, device.stream()>>>(
        dims, coefficients, grad_aligned, grad_prev_memory);
  }
};

template struct MatchTransFunctor<GPUDevice, Eigen::half>;
template struct MatchTransFunctor<GPUDevice, float>;
template struct MatchTransFunctor<GPUDevice, double>;
template struct MatchTransGradFunctor<GPUDevice, Eigen::half>;
template struct MatchTransGradFunctor<GPUDevice, float>;
template struct MatchTransGradFunctor<GPUDevice, double>;

}  // namespace match_trans
}  // namespace stmn

#endif  // GOOGLE_CUDA
