// The device-templated functors of Stmn>MatchTrans and Stmn>MatchTransGrad that the
// OpKernels call: the CPU ones in match_trans_kernels.cc, the GPU ones (thin glue
// over the launchers of match_trans_cuda.cuh) in match_trans_kernels.cu.cc. Both
// return a status that the kernel passes to OP_REQUIRES_OK.

#ifndef STMN_CUSTOM_OPS_MATCH_TRANS_MATCH_TRANS_FUNCTOR_H_
#define STMN_CUSTOM_OPS_MATCH_TRANS_MATCH_TRANS_FUNCTOR_H_

#include "match_trans.h"
#include "tensorflow/core/platform/status.h"

namespace stmn {
namespace match_trans {

// The CPU forward path, from STMN_MATCHTRANS_CPU_PATH: kFast is the blocked float
// path where it exists (float, k <= 3), the generic per-position path elsewhere;
// kGeneric forces the generic path, the arithmetic the CUDA kernels are checked
// against. The GPU functors ignore it.
enum class CpuPath { kFast, kGeneric };

// Forward: fills `aligned` [B, H, W, D] and `coefficients` [B, H, W, (2k+1)^2].
// `scratch` is 2 * B*H*W accumulators (the previous features' norms, then the
// memory's finiteness flags).
template <typename Device, typename T>
struct MatchTransFunctor {
  ::tensorflow::Status operator()(const Device& device, CpuPath path, const Dims& dims,
                                  const T* features, const T* prev_features,
                                  const T* prev_memory,
                                  typename Accumulator<T>::type* scratch, T* aligned,
                                  T* coefficients);
};

// Backward: fills `grad_prev_memory` [B, H, W, D] from the forward's coefficients.
template <typename Device, typename T>
struct MatchTransGradFunctor {
  ::tensorflow::Status operator()(const Device& device, const Dims& dims,
                                  const T* coefficients, const T* grad_aligned,
                                  T* grad_prev_memory);
};

}  // namespace match_trans
}  // namespace stmn

#endif  // STMN_CUSTOM_OPS_MATCH_TRANS_MATCH_TRANS_FUNCTOR_H_
