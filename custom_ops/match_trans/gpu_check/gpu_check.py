"""`make gpu-check`: the MatchTrans CUDA kernels on a GPU, without TensorFlow.

Builds, with nvcc alone, a small library over the TensorFlow-free kernels
(../match_trans_cuda.cu) and the CPU's generic path (../match_trans.h compiled for the
host), then on the first CUDA device:

1. agreement of the aligned memory, the coefficients and the memory gradient with
   the generic CPU path: float16/32/64, k = 0..3, affinity powers 1 (the authors')
   and 4, maps with zero feature vectors, maps smaller than the window, a single
   position, C not a multiple of 32, NaN and Inf inputs (the NaNs must sit at the
   same places);
2. time per frame of the forward and of forward + backward for 11 frames of 22x38
   (the paper's 337x600 frame at stride 16) and of 38x63, C = 1024, D = 512, k = 2,
   with CUDA events, next to the paper's 2.9 ms (Titan X);
3. where PyTorch imports and sees the GPU, the same computation in PyTorch
   (torch_peer.py, eager and, unless --no-compile, torch.compile) on the same inputs.

Prints a table and a final JSON line. Without nvcc, a driver or a device it says so
in one line and exits 0; a disagreement or a kernel error exits 1.

    python3 custom_ops/match_trans/gpu_check/gpu_check.py [--repeats 20] [--no-compile]
        [--no-peer] [--build-dir build/gpu_check]

Needs Python 3 and NumPy; nothing is downloaded. About 1-2 minutes on an H200.
"""

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OP_DIR = os.path.dirname(HERE)
ROOT = os.path.dirname(os.path.dirname(OP_DIR))
LIBRARY = "libstmn_match_trans_check.so"
SOURCES = [os.path.join(HERE, "check_api.cu"), os.path.join(OP_DIR, "match_trans_cuda.cu")]
DEPENDENCIES = SOURCES + [os.path.join(OP_DIR, "match_trans_cuda.cuh"),
                          os.path.join(OP_DIR, "match_trans.h"), os.path.abspath(__file__)]
# sm_80 and sm_90 machine code and sm_90 PTX, as the op library (custom_ops/build.py).
ARCH_FLAGS = ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=sm_90",
              "-gencode=arch=compute_90,code=compute_90"]

DTYPES = {"float16": 0, "float32": 1, "float64": 2}
TOLERANCES = {"float16": 1e-2, "float32": 1e-5, "float64": 1e-12}
FRAMES, CHANNELS, DEPTH, K = 11, 1024, 512, 2
TIMING_MAPS = [(22, 38), (38, 63)]
PAPER_MS_PER_FRAME = 2.9  # Titan X, 337x600 frame (paper Sec. 3.3)
TARGET_MS_PER_FRAME = 0.1  # the op's forward at 22x38 on an H200
# (name, B, H, W, C, D): zero vectors in "zeros"; C = 70 and 33 are not multiples of 32;
# NaN and Inf in the features and the memory in "nonfinite".
AGREEMENT_CASES = [("zeros", 2, 7, 9, 70, 40), ("smaller", 1, 2, 3, 33, 8),
                   ("single", 1, 1, 1, 33, 5), ("wide", 1, 3, 40, 64, 72),
                   ("nonfinite", 2, 6, 8, 40, 36)]
POWERS = (1.0, 4.0)  # the affinity power: the authors' formula, and a sharpened one


class CheckError(RuntimeError):
    pass


def find_nvcc():
    for candidate in (shutil.which("nvcc"),
                      os.path.join(os.environ.get("CUDA_HOME", ""), "bin", "nvcc"),
                      "/usr/local/cuda/bin/nvcc"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def build(nvcc, build_dir, arch_flags=ARCH_FLAGS):
    """Compiles the check library into build_dir (when its sources changed)."""
    target = os.path.join(build_dir, LIBRARY)
    if os.path.exists(target) and all(os.path.getmtime(d) <= os.path.getmtime(target)
                                      for d in DEPENDENCIES):
        return target
    os.makedirs(build_dir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=build_dir) as tmp:
        out = os.path.join(tmp, LIBRARY)
        cmd = [nvcc, "-shared", "-o", out] + SOURCES + [
            "-I", OP_DIR, "-O3", "-DNDEBUG", "-Xcompiler", "-fPIC,-fopenmp-simd",
            "--threads", "0", "-cudart", "static", "-Wno-deprecated-gpu-targets"] + arch_flags
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if proc.returncode != 0:
            raise CheckError(f"nvcc failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                             f"{proc.stdout[-4000:]}")
        os.replace(out, target)  # never half a library under the final name
    return target


class Library:
    """ctypes bindings of check_api.cu."""

    def __init__(self, path):
        import numpy as np

        self.np = np
        lib = ctypes.CDLL(path)
        p, i64p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64)
        lib.stmn_mt_error_string.restype = ctypes.c_char_p
        lib.stmn_mt_last_kernel.restype = ctypes.c_char_p
        lib.stmn_mt_malloc.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t]
        lib.stmn_mt_free.argtypes = [p]
        lib.stmn_mt_to_device.argtypes = [p, p, ctypes.c_size_t]
        lib.stmn_mt_to_host.argtypes = [p, p, ctypes.c_size_t]
        lib.stmn_mt_forward.argtypes = [ctypes.c_int, i64p, ctypes.c_double] + [p] * 6
        lib.stmn_mt_backward.argtypes = [ctypes.c_int, i64p] + [p] * 3
        lib.stmn_mt_reference_forward.argtypes = [ctypes.c_int, i64p, ctypes.c_double] + [p] * 6
        lib.stmn_mt_reference_backward.argtypes = [ctypes.c_int, i64p] + [p] * 3
        lib.stmn_mt_time.argtypes = ([ctypes.c_int, i64p] + [p] * 8
                                     + [ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_float)])
        lib.stmn_mt_device_name.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self.lib = lib
        self._allocations = []

    # -- errors and devices
    def check(self, status, what):
        if status != 0:
            kernel = self.lib.stmn_mt_last_kernel().decode()
            raise CheckError(f"{what} failed: {self.lib.stmn_mt_error_string(status).decode()}"
                             + (f" (kernel {kernel})" if kernel else ""))

    def device_count(self):
        n = self.lib.stmn_mt_device_count()
        return n, ("" if n >= 0 else self.lib.stmn_mt_error_string(-n).decode())

    def device_name(self):
        buf = ctypes.create_string_buffer(256)
        self.check(self.lib.stmn_mt_device_name(buf, 256), "cudaGetDeviceProperties")
        return buf.value.decode()

    # -- memory
    def to_device(self, array):
        ptr = ctypes.c_void_p()
        self.check(self.lib.stmn_mt_malloc(ctypes.byref(ptr), array.nbytes), "cudaMalloc")
        self._allocations.append(ptr)
        self.check(self.lib.stmn_mt_to_device(ptr, array.ctypes.data, array.nbytes), "copy")
        return ptr

    def empty_device(self, shape, dtype):
        return self.to_device(self.np.zeros(shape, dtype))

    def to_host(self, ptr, shape, dtype):
        out = self.np.empty(shape, dtype)
        self.check(self.lib.stmn_mt_to_host(out.ctypes.data, ptr, out.nbytes), "copy back")
        return out

    def free_all(self):
        for ptr in self._allocations:
            self.lib.stmn_mt_free(ptr)
        self._allocations = []

    # -- MatchTrans
    @staticmethod
    def dims(shape_fp, depth, k):
        b, h, w, c = shape_fp
        return (ctypes.c_int64 * 6)(b, h, w, c, depth, k)

    def shapes(self, f, m, k):
        """(dtype code, dims, coefficients' shape [B, H, W, (2k+1)^2], the scratch's
        shape [2 * B*H*W] and dtype: the accumulator's) of features f and memory m."""
        b, h, w, _ = f.shape
        norm_dtype = self.np.float64 if f.dtype == self.np.float64 else self.np.float32
        return (DTYPES[f.dtype.name], self.dims(f.shape, m.shape[-1], k),
                (b, h, w, (2 * k + 1) ** 2), 2 * b * h * w, norm_dtype)

    def reference(self, f, fp, m, upstream, k, power=1.0):
        """The generic CPU path: (aligned, coefficients, memory gradient)."""
        np = self.np
        code, dims, coef_shape, norms_shape, norm_dtype = self.shapes(f, m, k)
        norms = np.zeros(norms_shape, norm_dtype)
        aligned, coef, grad = (np.zeros(m.shape, f.dtype), np.zeros(coef_shape, f.dtype),
                               np.zeros(m.shape, f.dtype))
        f, fp, m, upstream = (np.ascontiguousarray(x) for x in (f, fp, m, upstream))
        self.check(self.lib.stmn_mt_reference_forward(
            code, dims, power, f.ctypes.data, fp.ctypes.data, m.ctypes.data, norms.ctypes.data,
            aligned.ctypes.data, coef.ctypes.data), "reference forward")
        self.check(self.lib.stmn_mt_reference_backward(
            code, dims, coef.ctypes.data, upstream.ctypes.data, grad.ctypes.data),
            "reference backward")
        return aligned, coef, grad

    def gpu(self, f, fp, m, upstream, k, power=1.0):
        """The CUDA kernels: (aligned, coefficients, memory gradient)."""
        np, dtype = self.np, f.dtype
        code, dims, coef_shape, norms_shape, norm_dtype = self.shapes(f, m, k)
        try:
            df, dfp, dm, dup = (self.to_device(np.ascontiguousarray(x))
                                for x in (f, fp, m, upstream))
            dnorms = self.empty_device(norms_shape, norm_dtype)
            daligned, dcoef = self.empty_device(m.shape, dtype), self.empty_device(coef_shape, dtype)
            dgrad = self.empty_device(m.shape, dtype)
            self.check(self.lib.stmn_mt_forward(code, dims, power, df, dfp, dm, dnorms, daligned,
                                                dcoef), "forward")
            self.check(self.lib.stmn_mt_backward(code, dims, dcoef, dup, dgrad), "backward")
            self.check(self.lib.stmn_mt_synchronize(), "kernels")
            return (self.to_host(daligned, m.shape, dtype), self.to_host(dcoef, coef_shape, dtype),
                    self.to_host(dgrad, m.shape, dtype))
        finally:
            self.free_all()


def make_inputs(np, case, dtype, seed=0):
    """Features, previous features, memory and upstream gradient of one case."""
    name, b, h, w, c, d = case
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(b, h, w, c))
    # Correlated frames, so that windows have several positive affinities.
    fp = 0.6 * np.roll(f, 1, axis=2) + 0.4 * rng.normal(size=(b, h, w, c))
    if name == "zeros":
        f[0, 1, 2] = 0.0  # no positive affinity: the identity fallback
        f[1, 6, :] = 0.0  # a zero row at the map's edge
        fp[1, 3, 4] = 0.0  # a zero neighbour
    m = rng.normal(size=(b, h, w, d))
    if name == "nonfinite":  # NaN in their windows' outputs, whatever the coefficients
        f[0, 2, 3, 5] = np.nan
        fp[1, 0, 7, 1] = np.inf
        m[0, 5, 0, 3] = np.nan
        m[1, 3, 3, 0] = -np.inf
    upstream = rng.normal(size=(b, h, w, d))
    return [x.astype(dtype) for x in (f, fp, m, upstream)]


def difference(np, got, want):
    """max |got - want| / (1 + |want|), in float64, over the entries that are NaN in
    neither; inf where only one of them is NaN or `got` holds an Inf."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.size == 0:
        return 0.0
    if np.any(np.isnan(got) != np.isnan(want)) or np.any(np.isinf(got)):
        return float("inf")
    both = ~np.isnan(got)
    if not np.any(both):
        return 0.0
    return float(np.max(np.abs(got[both] - want[both]) / (1.0 + np.abs(want[both]))))


def run_agreement(library):
    np = library.np
    rows = []
    for dtype_name in DTYPES:
        for k in range(4):
            for power in POWERS:
                for case in AGREEMENT_CASES:
                    inputs = make_inputs(np, case, np.dtype(dtype_name), seed=k)
                    ref = library.reference(*inputs, k, power)
                    got = library.gpu(*inputs, k, power)
                    diffs = [difference(np, g, r) for g, r in zip(got, ref)]
                    rows.append({"dtype": dtype_name, "k": k, "power": power,
                                 "case": case[0], "shape": list(case[1:]),
                                 "aligned": diffs[0], "coefficients": diffs[1],
                                 "memory_gradient": diffs[2],
                                 "ok": all(x <= TOLERANCES[dtype_name] for x in diffs)})
    return rows


def timing_inputs(np, h, w, dtype):
    rng = np.random.default_rng(1)
    f = rng.standard_normal((FRAMES, h, w, CHANNELS), dtype=np.float32)
    fp = (0.6 * np.roll(f, 1, axis=2)
          + 0.4 * rng.standard_normal(f.shape, dtype=np.float32))
    m = rng.standard_normal((FRAMES, h, w, DEPTH), dtype=np.float32)
    upstream = rng.standard_normal(m.shape, dtype=np.float32)
    return [x.astype(dtype) for x in (f, fp, m, upstream)]


def run_timing(library, repeats):
    np = library.np
    rows = []
    for h, w in TIMING_MAPS:
        for dtype_name in ("float32", "float16"):
            dtype = np.dtype(dtype_name)
            f, fp, m, upstream = timing_inputs(np, h, w, dtype)
            dims = library.dims(f.shape, DEPTH, K)
            try:
                df, dfp, dm, dup = (library.to_device(x) for x in (f, fp, m, upstream))
                dnorms = library.empty_device(2 * FRAMES * h * w, np.float32)
                daligned, dgrad = (library.empty_device(m.shape, dtype) for _ in range(2))
                dcoef = library.empty_device((FRAMES, h, w, (2 * K + 1) ** 2), dtype)
                ms = []
                for backward in (0, 1):
                    out = ctypes.c_float()
                    library.check(library.lib.stmn_mt_time(
                        DTYPES[dtype_name], dims, df, dfp, dm, dnorms, daligned, dcoef, dup,
                        dgrad, backward, repeats, ctypes.byref(out)), "timing")
                    ms.append(out.value / FRAMES)
            finally:
                library.free_all()
            rows.append({"map": f"{h}x{w}", "implementation": "cuda op", "dtype": dtype_name,
                         "forward_ms_per_frame": ms[0], "forward_backward_ms_per_frame": ms[1]})
    return rows


def run_peer(library, repeats, compile_peer):
    """PyTorch formulations: agreement with the kernels (float32) and timing rows."""
    try:
        import torch
    except ImportError:
        return {"available": False, "reason": "PyTorch does not import"}, []
    if not torch.cuda.is_available():
        return {"available": False, "reason": "PyTorch sees no CUDA device"}, []
    sys.path.insert(0, HERE)
    import torch_peer

    np = library.np
    info = {"available": True, "torch": torch.__version__,
            "allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32), "agreement": {}}
    formulations = dict(torch_peer.FORMULATIONS)
    if compile_peer:
        try:
            compiled = torch.compile(torch_peer.match_trans_shifted, dynamic=False)
            formulations["shifted, torch.compile"] = compiled
        except Exception as e:  # noqa: BLE001 - any failure to compile is reported
            info["compile_error"] = f"{type(e).__name__}: {e}"[:300]
    # Agreement with the kernels on a small float32 case, at each affinity power.
    f, fp, m, up = make_inputs(np, AGREEMENT_CASES[0], np.float32)
    wants = {power: library.gpu(f, fp, m, up, K, power)[0] for power in POWERS}
    for name, fn in list(formulations.items()):
        try:
            for power in POWERS:
                got = fn(*(torch.from_numpy(x).cuda() for x in (f, fp, m)), K,
                         power).cpu().numpy()
                key = name if power == 1.0 else f"{name}, power {power:g}"
                info["agreement"][key] = difference(np, got, wants[power])
        except Exception as e:  # noqa: BLE001 - torch.compile may fail at its first call
            info.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:300]
            formulations.pop(name)
    rows = []
    for h, w in TIMING_MAPS:
        f, fp, m, up = (torch.from_numpy(x).cuda()
                        for x in timing_inputs(np, h, w, np.float32))
        for name, fn in formulations.items():
            try:
                fwd, fwd_bwd = torch_peer.time_formulation(fn, f, fp, m, up, K, repeats)
            except Exception as e:  # noqa: BLE001 - reported, the other rows still run
                info.setdefault("errors", {})[f"{name} {h}x{w}"] = f"{type(e).__name__}: {e}"[:300]
                continue
            rows.append({"map": f"{h}x{w}", "implementation": f"pytorch {name}",
                         "dtype": "float32", "forward_ms_per_frame": fwd / FRAMES,
                         "forward_backward_ms_per_frame": fwd_bwd / FRAMES})
        del f, fp, m, up
        torch.cuda.empty_cache()
    return info, rows


def summarise(agreement, timing):
    """Max differences per dtype and the targets of the issue."""
    worst = {}
    for row in agreement:
        worst[row["dtype"]] = max(worst.get(row["dtype"], 0.0), row["aligned"],
                                  row["coefficients"], row["memory_gradient"])
    op = {r["map"]: r for r in timing if r["implementation"] == "cuda op"
          and r["dtype"] == "float32"}
    peers = [r for r in timing if r["implementation"].startswith("pytorch")]
    targets = {}
    if "22x38" in op:
        targets["op_forward_22x38_at_most_0.1_ms"] = (
            op["22x38"]["forward_ms_per_frame"] <= TARGET_MS_PER_FRAME)
    if peers:
        faster = True
        for map_name, row in op.items():
            best = [p["forward_ms_per_frame"] for p in peers if p["map"] == map_name]
            if best:
                faster &= row["forward_ms_per_frame"] < min(best)
        targets["op_forward_faster_than_best_pytorch"] = faster
    return worst, targets


def format_report(result):
    """The table and the final JSON line of a result dict (see main)."""
    lines = [f"gpu-check: MatchTrans CUDA kernels on {result['device']}, against the CPU "
             "generic path compiled for the host"]
    lines.append("")
    lines.append("agreement, max |gpu - cpu| / (1 + |cpu|):")
    lines.append("| dtype | k | power | case (B,H,W,C,D) | aligned | coefficients | memory grad "
                 "| ok |")
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in result["agreement"]:
        lines.append(f"| {r['dtype']} | {r['k']} | {r.get('power', 1.0):g} | "
                     f"{r['case']} {tuple(r['shape'])} | "
                     f"{r['aligned']:.2e} | {r['coefficients']:.2e} | "
                     f"{r['memory_gradient']:.2e} | {'yes' if r['ok'] else 'NO'} |")
    lines.append("tolerances: " + ", ".join(f"{k} {v:g}" for k, v in TOLERANCES.items()))
    if result["timing"]:
        lines.append("")
        lines.append(f"time per frame, ms ({FRAMES} frames, C = {CHANNELS}, D = {DEPTH}, "
                     f"k = {K}; CUDA events, median of {result['repeats']}):")
        lines.append("| map | implementation | dtype | forward | forward + backward |")
        lines.append("| --- | --- | --- | --- | --- |")
        for r in result["timing"]:
            lines.append(f"| {r['map']} | {r['implementation']} | {r['dtype']} | "
                         f"{r['forward_ms_per_frame']:.4f} | "
                         f"{r['forward_backward_ms_per_frame']:.4f} |")
        lines.append(f"paper: {PAPER_MS_PER_FRAME} ms per 337x600 frame (Titan X); target: "
                     f"the op's forward <= {TARGET_MS_PER_FRAME} ms per frame at 22x38 and "
                     "faster than the best PyTorch formulation")
    peer = result.get("peer") or {}
    if peer and not peer.get("available"):
        lines.append(f"PyTorch peer: not run ({peer.get('reason')})")
    elif peer:
        lines.append("PyTorch peer agreement with the kernels (float32, max |torch - op| / "
                     "(1 + |op|)): " + ", ".join(f"{k} {v:.2e}" for k, v in
                                                 peer.get("agreement", {}).items()))
        for name, error in peer.get("errors", {}).items():
            lines.append(f"PyTorch peer {name}: {error}")
    lines.append("")
    lines.append(json.dumps(result, sort_keys=True))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--no-peer", action="store_true", help="skip the PyTorch peer")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--no-timing", action="store_true", help="agreement only")
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build", "gpu_check"))
    args = parser.parse_args(argv)

    nvcc = find_nvcc()
    if nvcc is None:
        print("gpu-check: skipped, no nvcc found (needs the CUDA toolkit and an NVIDIA GPU)")
        return 0
    try:
        import numpy  # noqa: F401
    except ImportError:
        print("gpu-check: skipped, NumPy does not import (python3 -m pip install numpy)")
        return 0
    started = time.time()
    try:
        library = Library(build(nvcc, args.build_dir))
    except (CheckError, OSError) as e:
        print(f"gpu-check: FAILED to build the check library: {e}")
        return 1
    count, reason = library.device_count()
    if count <= 0:
        print(f"gpu-check: skipped, no CUDA device ({reason or 'none found'}); the check "
              f"library built with {nvcc}")
        return 0
    try:
        result = {"device": library.device_name(), "repeats": args.repeats}
        result["agreement"] = run_agreement(library)
        result["timing"] = [] if args.no_timing else run_timing(library, args.repeats)
        if args.no_peer or args.no_timing:
            result["peer"] = {"available": False, "reason": "skipped (--no-peer)"}
        else:
            result["peer"], peer_rows = run_peer(library, args.repeats, not args.no_compile)
            result["timing"] += peer_rows
    except CheckError as e:
        print(f"gpu-check: FAILED: {e}")
        return 1
    result["max_difference"], result["targets"] = summarise(result["agreement"],
                                                            result["timing"])
    result["agreement_ok"] = all(r["ok"] for r in result["agreement"])
    result["seconds"] = round(time.time() - started, 1)
    print(format_report(result))
    return 0 if result["agreement_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
