// CUDA kernels of MatchTrans (see match_trans.h for the arithmetic, match_trans_cuda.cuh
// for the launchers). No TensorFlow or Eigen header: built by custom_ops/build.py into
// the op library and, alone, by gpu_check/ into the standalone check.
//
// Work split: one warp per position (grid-stride over positions), lanes over
// channels. Neighbouring lanes read neighbouring channels of the same vector, so
// every load of a warp is one contiguous run of the NHWC row (coalesced), and the dot
// products end in shuffle reductions. Per position the warp stages its window of
// affinities, then coefficients, in shared memory ((2k+1)^2 accumulators a warp),
// where the lanes of the weighted sum read them.
//
// Neighbour feature vectors are read from global memory, not staged in shared
// memory: the warps of a block are consecutive positions of a row and walk the
// channels in step, so the (2k+1) x (warps + 2k) neighbour vectors they share are
// served by L1 (and one frame of prev_features, 3.4 MB at 22x38x1024 in float, stays
// in L2); copying them to shared memory first would add a pass and a barrier for
// no fewer DRAM reads.
//
// Arithmetic per position as in the CPU's generic path, with the functions of
// match_trans.h that both share: the norms (NormFromSquaredSum), Affinity (and its
// power), the window bounds (ForwardWindow, GradWindow), NormalisedCoefficient and the
// non-finite rule (IsFinite, NonFiniteFlag, NotANumber); the
// coefficients are rounded to T before the weighted sum, as the CPU reads them back
// from its T output. Half inputs accumulate in float.

#include <atomic>

#include "match_trans_cuda.cuh"

namespace stmn {
namespace match_trans {
namespace cuda {

namespace {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kMaxWarpsPerBlock = 8;
// Neighbours of one window row whose dot products a lane accumulates in registers
// in one pass over the channels: a whole row for k <= 3 (2k+1 <= 8).
constexpr int kRowChunk = 8;
constexpr int kMaxDevices = 64;

template <typename A>
__device__ __forceinline__ A WarpSum(A v) {
#pragma unroll
  for (int s = kWarp / 2; s > 0; s >>= 1) v += __shfl_xor_sync(kFullMask, v, s);
  return v;  // every lane holds the sum
}

template <typename A, typename T>
__device__ __forceinline__ A Load(const T* p) {
  return static_cast<A>(*p);
}

// The warp's place in a grid-stride loop over items (positions).
struct WarpLoop {
  int lane, warp_in_block;
  int64_t first, stride;
};

__device__ __forceinline__ WarpLoop Warps() {
  const int warps_per_block = blockDim.x / kWarp;
  WarpLoop w;
  w.lane = threadIdx.x % kWarp;
  w.warp_in_block = threadIdx.x / kWarp;
  w.first = static_cast<int64_t>(blockIdx.x) * warps_per_block + w.warp_in_block;
  w.stride = static_cast<int64_t>(gridDim.x) * warps_per_block;
  return w;
}

// |v| + 1e-8 of the C-vector v, summed by one warp (every lane gets it): the
// denominator factor of the cosine, as NormPlusEpsilon on the CPU.
template <typename A, typename T>
__device__ __forceinline__ A WarpNorm(const T* v, int64_t C, int lane) {
  A squares = A(0);
  for (int64_t c = lane; c < C; c += kWarp) {
    const A t = Load<A>(v + c);
    squares += t * t;
  }
  return NormFromSquaredSum<A>(WarpSum(squares));
}

// One dynamic shared buffer for all kernels, aligned for double.
extern __shared__ __align__(sizeof(double)) unsigned char shared_bytes[];

// scratch[i] = |prev_features[i]| + 1e-8 and scratch[n + i] = the sum of (m - m) over
// prev_memory[i] (0, or NaN for a non-finite vector), i over the n = B*H*W positions.
template <typename T, typename A>
__global__ void MatchTransPrevNorms(Dims dims, const T* __restrict__ prev_features,
                                    const T* __restrict__ prev_memory, A* __restrict__ scratch) {
  const WarpLoop w = Warps();
  const int64_t n = dims.positions(), C = dims.channels, D = dims.depth;
  for (int64_t i = w.first; i < n; i += w.stride) {  // warp-uniform
    const A norm = WarpNorm<A>(prev_features + i * C, C, w.lane);
    const T* m = prev_memory + i * D;
    A flag = A(0);
    for (int64_t d = w.lane; d < D; d += kWarp) {
      const A t = Load<A>(m + d);
      flag += t - t;
    }
    flag = WarpSum(flag);
    if (w.lane == 0) {
      scratch[i] = norm;
      scratch[n + i] = flag;
    }
  }
}

// Coefficients and aligned memory of each position (one warp each).
template <typename T, typename A>
__global__ void MatchTransForward(Dims dims, const T* __restrict__ features,
                                  const T* __restrict__ prev_features,
                                  const T* __restrict__ prev_memory,
                                  const A* __restrict__ scratch, T* __restrict__ aligned,
                                  T* __restrict__ coefficients) {
  const WarpLoop w = Warps();
  const int64_t H = dims.height, W = dims.width, C = dims.channels, D = dims.depth;
  const int64_t HW = H * W, n = dims.positions();
  const int k = dims.k, K = 2 * k + 1, K2 = K * K;
  const float power = dims.affinity_power;
  const A* prev_norms = scratch;
  const A* memory_flags = scratch + n;
  A* window = reinterpret_cast<A*>(shared_bytes) + w.warp_in_block * K2;
  for (int64_t i = w.first; i < n; i += w.stride) {  // warp-uniform
    const int64_t b = i / HW, y = (i % HW) / W, x = i % W;
    const T* f = features + i * C;
    const T* prev_image = prev_features + b * HW * C;
    const A* norms_image = prev_norms + b * HW;
    const A* flags_image = memory_flags + b * HW;

    const A norm_f = WarpNorm<A>(f, C, w.lane);
    for (int o = w.lane; o < K2; o += kWarp) window[o] = A(0);  // out of bounds: 0
    __syncwarp();

    int dy0, dy1, dx0, dx1;
    ForwardWindow(y, H, k, &dy0, &dy1);
    ForwardWindow(x, W, k, &dx0, &dx1);
    // The non-finite rule of match_trans.h: a non-finite feature norm in the window
    // poisons the coefficients, a non-finite memory vector the aligned memory.
    bool features_ok = IsFinite(norm_f), memory_ok = true;
    for (int o = w.lane; o < K2; o += kWarp) {
      const int dy = o / K - k, dx = o % K - k;
      if (dy >= dy0 && dy <= dy1 && dx >= dx0 && dx <= dx1) {
        const int64_t q = (y + dy) * W + (x + dx);
        features_ok = features_ok && IsFinite(norms_image[q]);
        memory_ok = memory_ok && !NonFiniteFlag(flags_image[q]);
      }
    }
    features_ok = __all_sync(kFullMask, features_ok);
    memory_ok = __all_sync(kFullMask, memory_ok);
    for (int dy = dy0; dy <= dy1; ++dy) {
      for (int dxs = dx0; dxs <= dx1; dxs += kRowChunk) {
        const int count = dx1 - dxs + 1 < kRowChunk ? dx1 - dxs + 1 : kRowChunk;
        const T* g = prev_image + ((y + dy) * W + (x + dxs)) * C;  // `count` vectors, stride C
        A acc[kRowChunk];
#pragma unroll
        for (int j = 0; j < kRowChunk; ++j) acc[j] = A(0);
        for (int64_t c = w.lane; c < C; c += kWarp) {
          const A fv = Load<A>(f + c);
#pragma unroll
          for (int j = 0; j < kRowChunk; ++j) {
            if (j < count) acc[j] += fv * Load<A>(g + j * C + c);
          }
        }
#pragma unroll
        for (int j = 0; j < kRowChunk; ++j) {
          if (j < count) {  // warp-uniform, so the whole warp takes part in the shuffles
            const A dot = WarpSum(acc[j]);
            if (w.lane == 0) {
              const int64_t q = (y + dy) * W + (x + dxs + j);
              window[(dy + k) * K + (dxs + j + k)] = Affinity<A>(dot, norm_f, norms_image[q]);
            }
          }
        }
      }
    }
    __syncwarp();

    A partial = A(0);
    for (int o = w.lane; o < K2; o += kWarp) partial += Sharpen(window[o], power);
    const A mass = WarpSum(partial);
    T* coef = coefficients + i * K2;
    for (int o = w.lane; o < K2; o += kWarp) {
      // The affinity rounded to T first, as the CPU stores it before normalising.
      T c = NormalisedCoefficient<T, A>(static_cast<T>(window[o]), mass, o == k * K + k,
                                        power);
      const int dy = o / K - k, dx = o % K - k;
      if (!features_ok && dy >= dy0 && dy <= dy1 && dx >= dx0 && dx <= dx1) {
        c = NotANumber<T>();  // in-bounds offsets only, as PoisonWindow
      }
      coef[o] = c;
      window[o] = static_cast<A>(c);  // each lane rewrites only the entries it read
    }
    __syncwarp();

    const T* memory_image = prev_memory + b * HW * D;
    for (int64_t d = w.lane; d < D; d += kWarp) {
      A acc = A(0);
      if (!memory_ok) {  // warp-uniform
        aligned[i * D + d] = NotANumber<T>();
        continue;
      }
      for (int dy = dy0; dy <= dy1; ++dy) {
        for (int dx = dx0; dx <= dx1; ++dx) {
          const A c = window[(dy + k) * K + (dx + k)];
          if (c == A(0)) continue;  // warp-uniform: every lane reads the same entry
          acc += c * Load<A>(memory_image + ((y + dy) * W + (x + dx)) * D + d);
        }
      }
      aligned[i * D + d] = static_cast<T>(acc);
    }
    __syncwarp();  // the window is reused by the warp's next position
  }
}

// grad_prev_memory at source cell q: sum over p = q - o of coef(p)[o] grad_aligned(p),
// gathered by the warp of q, so that no two warps write the same cell.
template <typename T, typename A>
__global__ void MatchTransGrad(Dims dims, const T* __restrict__ coefficients,
                               const T* __restrict__ grad_aligned,
                               T* __restrict__ grad_prev_memory) {
  const WarpLoop w = Warps();
  const int64_t H = dims.height, W = dims.width, D = dims.depth;
  const int64_t HW = H * W, n = dims.positions();
  const int k = dims.k, K = 2 * k + 1, K2 = K * K;
  A* window = reinterpret_cast<A*>(shared_bytes) + w.warp_in_block * K2;
  for (int64_t i = w.first; i < n; i += w.stride) {  // warp-uniform
    const int64_t b = i / HW, y = (i % HW) / W, x = i % W;
    int dy0, dy1, dx0, dx1;
    GradWindow(y, H, k, &dy0, &dy1);
    GradWindow(x, W, k, &dx0, &dx1);
    const T* coef_image = coefficients + b * HW * K2;
    const T* grad_image = grad_aligned + b * HW * D;
    for (int o = w.lane; o < K2; o += kWarp) {
      const int dy = o / K - k, dx = o % K - k;
      A c = A(0);
      if (dy >= dy0 && dy <= dy1 && dx >= dx0 && dx <= dx1) {
        c = Load<A>(coef_image + ((y - dy) * W + (x - dx)) * K2 + o);
      }
      window[o] = c;
    }
    __syncwarp();
    for (int64_t d = w.lane; d < D; d += kWarp) {
      A acc = A(0);
      for (int dy = dy0; dy <= dy1; ++dy) {
        for (int dx = dx0; dx <= dx1; ++dx) {
          const A c = window[(dy + k) * K + (dx + k)];
          if (c == A(0)) continue;
          acc += c * Load<A>(grad_image + ((y - dy) * W + (x - dx)) * D + d);
        }
      }
      grad_prev_memory[i * D + d] = static_cast<T>(acc);
    }
    __syncwarp();
  }
}

// Multiprocessor count and resident threads per multiprocessor of each device,
// queried once.
struct DeviceShape {
  int multiprocessors, threads_per_multiprocessor, shared_per_block;
};

cudaError_t QueryDevice(DeviceShape* shape) {
  static std::atomic<int> cache[kMaxDevices][3];  // zero-initialised: not queried yet
  int device = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e != cudaSuccess) return e;
  const bool cached = device >= 0 && device < kMaxDevices && cache[device][0].load() > 0;
  if (cached) {
    shape->multiprocessors = cache[device][0].load();
    shape->threads_per_multiprocessor = cache[device][1].load();
    shape->shared_per_block = cache[device][2].load();
    return cudaSuccess;
  }
  e = cudaDeviceGetAttribute(&shape->multiprocessors, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess) {
    e = cudaDeviceGetAttribute(&shape->threads_per_multiprocessor,
                               cudaDevAttrMaxThreadsPerMultiProcessor, device);
  }
  if (e == cudaSuccess) {
    e = cudaDeviceGetAttribute(&shape->shared_per_block, cudaDevAttrMaxSharedMemoryPerBlock,
                               device);
  }
  if (e != cudaSuccess) return e;
  if (device >= 0 && device < kMaxDevices) {
    cache[device][1].store(shape->threads_per_multiprocessor);
    cache[device][2].store(shape->shared_per_block);
    cache[device][0].store(shape->multiprocessors);  // last: marks the entry complete
  }
  return cudaSuccess;
}

struct Launch {
  int blocks, threads;
  size_t shared;
};

// A grid of warps over `items`, with `shared_per_warp` bytes of shared memory a
// warp: up to kMaxWarpsPerBlock warps a block (fewer when the window does not fit),
// and at most a few waves of resident blocks; the kernels' grid-stride loops cover
// the rest.
cudaError_t Plan(int64_t items, size_t shared_per_warp, Launch* launch) {
  DeviceShape device;
  const cudaError_t e = QueryDevice(&device);
  if (e != cudaSuccess) return e;
  int warps = kMaxWarpsPerBlock;
  while (warps > 1 && warps * shared_per_warp > static_cast<size_t>(device.shared_per_block)) {
    warps /= 2;
  }
  if (warps * shared_per_warp > static_cast<size_t>(device.shared_per_block)) {
    return cudaErrorInvalidValue;  // k so large that one window exceeds shared memory
  }
  launch->threads = warps * kWarp;
  launch->shared = warps * shared_per_warp;
  const int64_t resident =
      static_cast<int64_t>(device.multiprocessors) *
      (device.threads_per_multiprocessor / launch->threads > 0
           ? device.threads_per_multiprocessor / launch->threads
           : 1);
  const int64_t needed = (items + warps - 1) / warps;
  const int64_t cap = 4 * resident;
  launch->blocks = static_cast<int>(needed < cap ? needed : cap);
  return cudaSuccess;
}

}  // namespace

template <typename T>
LaunchStatus Forward(const Dims& dims, const T* features, const T* prev_features,
                     const T* prev_memory, typename Accumulator<T>::type* scratch,
                     T* aligned, T* coefficients, cudaStream_t stream) {
  using A = typename Accumulator<T>::type;
  const int64_t n = dims.positions();
  if (n == 0) return {cudaSuccess, nullptr};
  Launch launch;
  cudaError_t e = Plan(n, 0, &launch);
  if (e != cudaSuccess) return {e, "MatchTransPrevNorms (launch plan)"};
  MatchTransPrevNorms<T, A><<<launch.blocks, launch.threads, 0, stream>>>(
      dims, prev_features, prev_memory, scratch);
  e = cudaGetLastError();
  if (e != cudaSuccess) return {e, "MatchTransPrevNorms"};
  e = Plan(n, sizeof(A) * dims.window(), &launch);
  if (e != cudaSuccess) return {e, "MatchTransForward (launch plan)"};
  MatchTransForward<T, A><<<launch.blocks, launch.threads, launch.shared, stream>>>(
      dims, features, prev_features, prev_memory, scratch, aligned, coefficients);
  e = cudaGetLastError();
  if (e != cudaSuccess) return {e, "MatchTransForward"};
  return {cudaSuccess, nullptr};
}

template <typename T>
LaunchStatus Backward(const Dims& dims, const T* coefficients, const T* grad_aligned,
                      T* grad_prev_memory, cudaStream_t stream) {
  using A = typename Accumulator<T>::type;
  const int64_t n = dims.positions();
  if (n == 0) return {cudaSuccess, nullptr};
  Launch launch;
  cudaError_t e = Plan(n, sizeof(A) * dims.window(), &launch);
  if (e != cudaSuccess) return {e, "MatchTransGrad (launch plan)"};
  MatchTransGrad<T, A><<<launch.blocks, launch.threads, launch.shared, stream>>>(
      dims, coefficients, grad_aligned, grad_prev_memory);
  e = cudaGetLastError();
  if (e != cudaSuccess) return {e, "MatchTransGrad"};
  return {cudaSuccess, nullptr};
}

#define STMN_INSTANTIATE(T)                                                               \
  template LaunchStatus Forward<T>(const Dims&, const T*, const T*, const T*,             \
                                   Accumulator<T>::type*, T*, T*, cudaStream_t);          \
  template LaunchStatus Backward<T>(const Dims&, const T*, const T*, T*, cudaStream_t);
STMN_INSTANTIATE(__half)
STMN_INSTANTIATE(float)
STMN_INSTANTIATE(double)
#undef STMN_INSTANTIATE

}  // namespace cuda
}  // namespace match_trans
}  // namespace stmn
