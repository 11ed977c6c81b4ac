// GPU functors of Stmn>MatchTrans: thin glue from TensorFlow's types to the
// TensorFlow-free launchers of match_trans_cuda.cuh (the kernels are in
// match_trans_cuda.cu), turning a failed launch into an error naming the kernel.

#if GOOGLE_CUDA

#define EIGEN_USE_GPU

#include "match_trans_cuda.cuh"
#include "match_trans_functor.h"

#include "tensorflow/core/platform/errors.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace stmn {
namespace match_trans {

using GPUDevice = Eigen::GpuDevice;

namespace {

// Eigen::half and __half are both IEEE binary16 in 16 bits: the glue passes the
// tensors' memory to the kernels as __half.
template <typename T>
struct KernelType {
  using type = T;
};
template <>
struct KernelType<Eigen::half> {
  using type = __half;
};
static_assert(sizeof(Eigen::half) == sizeof(__half) && alignof(Eigen::half) == alignof(__half),
              "Eigen::half and __half must share their layout");

template <typename T>
const typename KernelType<T>::type* Raw(const T* p) {
  return reinterpret_cast<const typename KernelType<T>::type*>(p);
}
template <typename T>
typename KernelType<T>::type* Raw(T* p) {
  return reinterpret_cast<typename KernelType<T>::type*>(p);
}

::tensorflow::Status ToStatus(const cuda::LaunchStatus& launch) {
  if (launch.ok()) return ::tensorflow::OkStatus();
  return ::tensorflow::errors::Internal("MatchTrans: CUDA kernel ", launch.kernel, " failed: ",
                                        cudaGetErrorName(launch.error), " (",
                                        cudaGetErrorString(launch.error), ")");
}

}  // namespace

template <typename T>
struct MatchTransFunctor<GPUDevice, T> {
  ::tensorflow::Status operator()(const GPUDevice& device, CpuPath /*path*/, const Dims& dims,
                                  const T* features, const T* prev_features,
                                  const T* prev_memory,
                                  typename Accumulator<T>::type* scratch, T* aligned,
                                  T* coefficients) {
    return ToStatus(cuda::Forward(dims, Raw(features), Raw(prev_features), Raw(prev_memory),
                                  scratch, Raw(aligned), Raw(coefficients),
                                  device.stream()));
  }
};

template <typename T>
struct MatchTransGradFunctor<GPUDevice, T> {
  ::tensorflow::Status operator()(const GPUDevice& device, const Dims& dims,
                                  const T* coefficients, const T* grad_aligned,
                                  T* grad_prev_memory) {
    return ToStatus(cuda::Backward(dims, Raw(coefficients), Raw(grad_aligned),
                                   Raw(grad_prev_memory), device.stream()));
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
