// CUDA kernels of MatchTrans behind two launchers, with no TensorFlow or Eigen
// header: raw device pointers, a cudaStream_t and the Dims of match_trans.h. The
// TensorFlow functors (match_trans_kernels.cu.cc) and the standalone GPU check
// (gpu_check/) call the same launchers.
//
// T is __half, float or double; half inputs accumulate in float (Accumulator<T>).
// Shapes (NHWC): features, prev_features [B, H, W, C]; prev_memory, aligned,
// grad_aligned, grad_prev_memory [B, H, W, D]; coefficients [B, H, W, (2k+1)^2];
// scratch is 2 * B*H*W accumulators: the norms of prev_features, then the finiteness
// flags of prev_memory (match_trans.h, MemoryFlag). dims.affinity_power is the power of
// the affinities (1: the authors' formula).

#ifndef STMN_CUSTOM_OPS_MATCH_TRANS_MATCH_TRANS_CUDA_CUH_
#define STMN_CUSTOM_OPS_MATCH_TRANS_MATCH_TRANS_CUDA_CUH_

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "match_trans.h"

namespace stmn {
namespace match_trans {
namespace cuda {

// The outcome of a launcher: cudaSuccess, or the error of the first kernel that
// failed (checked with cudaGetLastError right after each launch) and its name.
struct LaunchStatus {
  cudaError_t error;
  const char* kernel;  // nullptr on success
  bool ok() const { return error == cudaSuccess; }
};

// Forward: the scratch, then coefficients and aligned memory, on `stream`.
template <typename T>
LaunchStatus Forward(const Dims& dims, const T* features, const T* prev_features,
                     const T* prev_memory, typename Accumulator<T>::type* scratch,
                     T* aligned, T* coefficients, cudaStream_t stream);

// Backward: grad_prev_memory from the forward's coefficients, as a gather over the
// positions whose windows read each source cell (no atomics).
template <typename T>
LaunchStatus Backward(const Dims& dims, const T* coefficients, const T* grad_aligned,
                      T* grad_prev_memory, cudaStream_t stream);

#define STMN_DECLARE_LAUNCHERS(T)                                                        \
  extern template LaunchStatus Forward<T>(const Dims&, const T*, const T*, const T*,     \
                                          Accumulator<T>::type*, T*, T*, cudaStream_t);  \
  extern template LaunchStatus Backward<T>(const Dims&, const T*, const T*, T*,         \
                                           cudaStream_t);
STMN_DECLARE_LAUNCHERS(__half)
STMN_DECLARE_LAUNCHERS(float)
STMN_DECLARE_LAUNCHERS(double)
#undef STMN_DECLARE_LAUNCHERS

}  // namespace cuda
}  // namespace match_trans
}  // namespace stmn

#endif  // STMN_CUSTOM_OPS_MATCH_TRANS_MATCH_TRANS_CUDA_CUH_
