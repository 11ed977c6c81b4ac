// A C interface over the TensorFlow-free MatchTrans kernels (../match_trans_cuda.cu)
// and the generic CPU path of ../match_trans.h compiled for the host, for
// gpu_check.py (ctypes). Built by nvcc alone: no TensorFlow anywhere.
//
// dtype: 0 float16 (__half), 1 float32, 2 float64. dims: {B, H, W, C, D, k}; power: the
// affinity power (1: the authors' formula).
// Shapes (NHWC): features, prev_features [B, H, W, C]; prev_memory, aligned,
// grad_aligned, grad_prev_memory [B, H, W, D]; coefficients [B, H, W, (2k+1)^2];
// norms: 2 * B*H*W accumulators (float, or double for float64): the scratch of the
// forward (the previous features' norms, then the memory's finiteness flags).
// Functions returning int return a cudaError_t (0: success).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../match_trans_cuda.cuh"

namespace mt = stmn::match_trans;

namespace {

thread_local const char* last_kernel = "";

mt::Dims ToDims(const int64_t* d, double power = 1.0) {
  return mt::Dims{d[0], d[1], d[2], d[3], d[4], static_cast<int>(d[5]),
                  static_cast<float>(power)};
}

int Record(const mt::cuda::LaunchStatus& s) {
  last_kernel = s.kernel == nullptr ? "" : s.kernel;
  return static_cast<int>(s.error);
}

template <typename T>
int ForwardT(const mt::Dims& dims, const void* f, const void* fp, const void* m, void* norms,
             void* aligned, void* coef, cudaStream_t stream) {
  using A = typename mt::Accumulator<T>::type;
  return Record(mt::cuda::Forward<T>(dims, static_cast<const T*>(f), static_cast<const T*>(fp),
                                     static_cast<const T*>(m), static_cast<A*>(norms),
                                     static_cast<T*>(aligned), static_cast<T*>(coef), stream));
}

template <typename T>
int BackwardT(const mt::Dims& dims, const void* coef, const void* grad, void* out,
              cudaStream_t stream) {
  return Record(mt::cuda::Backward<T>(dims, static_cast<const T*>(coef),
                                      static_cast<const T*>(grad), static_cast<T*>(out), stream));
}

// fn(T()) for the element type T of the `dtype` code (0 __half, 1 float, 2 double): one
// switch for every entry point; an unknown code is cudaErrorInvalidValue.
template <typename Fn>
int ForDtype(int dtype, Fn fn) {
  switch (dtype) {
    case 0: return fn(__half());
    case 1: return fn(float());
    case 2: return fn(double());
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

}  // namespace

extern "C" {

// Number of CUDA devices, or minus the cudaError_t (no driver, no device).
int stmn_mt_device_count() {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  return e == cudaSuccess ? n : -static_cast<int>(e);
}

const char* stmn_mt_error_string(int error) {
  return cudaGetErrorString(static_cast<cudaError_t>(error));
}

// The kernel that the last failed launcher named ("" after a success).
const char* stmn_mt_last_kernel() { return last_kernel; }

int stmn_mt_device_name(char* buffer, int size) {
  cudaDeviceProp prop;
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess) return static_cast<int>(e);
  std::strncpy(buffer, prop.name, size - 1);
  buffer[size - 1] = '\0';
  return 0;
}

int stmn_mt_malloc(void** p, size_t bytes) {
  return static_cast<int>(cudaMalloc(p, bytes > 0 ? bytes : 1));
}
int stmn_mt_free(void* p) { return static_cast<int>(cudaFree(p)); }
int stmn_mt_to_device(void* dst, const void* src, size_t bytes) {
  return static_cast<int>(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
int stmn_mt_to_host(void* dst, const void* src, size_t bytes) {
  return static_cast<int>(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
int stmn_mt_synchronize() { return static_cast<int>(cudaDeviceSynchronize()); }

int stmn_mt_forward(int dtype, const int64_t* dims, double power, const void* f,
                    const void* fp, const void* m, void* norms, void* aligned, void* coef) {
  const mt::Dims d = ToDims(dims, power);
  return ForDtype(dtype, [&](auto tag) {
    return ForwardT<decltype(tag)>(d, f, fp, m, norms, aligned, coef, 0);
  });
}

int stmn_mt_backward(int dtype, const int64_t* dims, const void* coef, const void* grad,
                     void* out) {
  const mt::Dims d = ToDims(dims);
  return ForDtype(dtype, [&](auto tag) {
    return BackwardT<decltype(tag)>(d, coef, grad, out, 0);
  });
}

// The CPU's generic path on host memory (the reference of the kernels).
int stmn_mt_reference_forward(int dtype, const int64_t* dims, double power, const void* f,
                              const void* fp, const void* m, void* norms, void* aligned,
                              void* coef) {
  const mt::Dims d = ToDims(dims, power);
  return ForDtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    mt::ReferenceForward<T>(d, static_cast<const T*>(f), static_cast<const T*>(fp),
                            static_cast<const T*>(m),
                            static_cast<typename mt::Accumulator<T>::type*>(norms),
                            static_cast<T*>(aligned), static_cast<T*>(coef));
    return 0;
  });
}

int stmn_mt_reference_backward(int dtype, const int64_t* dims, const void* coef,
                               const void* grad, void* out) {
  const mt::Dims d = ToDims(dims);
  return ForDtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    mt::ReferenceBackward<T>(d, static_cast<const T*>(coef), static_cast<const T*>(grad),
                             static_cast<T*>(out));
    return 0;
  });
}

// Median milliseconds of `repeats` timed calls (after 3 untimed ones), with CUDA
// events on the default stream: the forward, or forward + backward when backward != 0
// (grad and out: the backward's grad_aligned and grad_prev_memory).
int stmn_mt_time(int dtype, const int64_t* dims, const void* f, const void* fp, const void* m,
                 void* norms, void* aligned, void* coef, const void* grad, void* out,
                 int backward, int repeats, float* median_ms) {
  cudaEvent_t start, stop;
  cudaError_t e = cudaEventCreate(&start);
  if (e == cudaSuccess) e = cudaEventCreate(&stop);
  if (e != cudaSuccess) return static_cast<int>(e);
  std::vector<float> times;
  int status = 0;
  for (int i = 0; i < repeats + 3 && status == 0; ++i) {
    cudaEventRecord(start, 0);
    status = stmn_mt_forward(dtype, dims, 1.0, f, fp, m, norms, aligned, coef);
    if (status == 0 && backward) status = stmn_mt_backward(dtype, dims, coef, grad, out);
    cudaEventRecord(stop, 0);
    if (status == 0) status = static_cast<int>(cudaEventSynchronize(stop));
    float ms = 0.f;
    if (status == 0) status = static_cast<int>(cudaEventElapsedTime(&ms, start, stop));
    if (i >= 3) times.push_back(ms);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  if (status != 0) return status;
  std::sort(times.begin(), times.end());
  *median_ms = times.empty() ? 0.f : times[times.size() / 2];
  return 0;
}

}  // extern "C"
