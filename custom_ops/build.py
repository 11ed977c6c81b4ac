"""Builds the custom op libraries against the installed TensorFlow.

Run by `setup.py build_ext` (and so by `make install`), or directly:

    python custom_ops/build.py [--no-cuda] [--force]

Compile and link flags come from `tf.sysconfig` (C++17 and the CXX11 ABI that the
TensorFlow wheel reports). The CPU code is compiled for a portable x86-64 baseline and
the hot per-position functions get AVX2/FMA clones picked at load time (GCC function
multi-versioning), so one library runs on any x86-64 CPU. When `nvcc` is found the CUDA
kernels are compiled too (sm_80 and sm_90, cudart linked statically) and the GPU
kernels registered: `*.cu` (the TensorFlow-free kernels) without TensorFlow's flags,
`*.cu.cc` (the functors) with them. A CUDA build failure falls back to the CPU-only
library.
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = {
    # library name (in stmn_tf/ops/) -> source folder (in custom_ops/)
    "_match_trans_ops.so": "match_trans",
}


# sm_80 (A100) and sm_90 (H100/H200) machine code, plus PTX for later GPUs.
CUDA_ARCH_FLAGS = [
    "-gencode=arch=compute_80,code=sm_80",
    "-gencode=arch=compute_90,code=sm_90",
    "-gencode=arch=compute_90,code=compute_90",
    "-Wno-deprecated-gpu-targets",
]


class BuildError(RuntimeError):
    pass


def _tf_flags():
    try:
        import tensorflow as tf
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise BuildError(
            "TensorFlow is not importable, so the custom ops cannot be built: install "
            "tensorflow~=2.20.0 first (make install does)."
        ) from e
    return tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags(), tf.__file__


def _cpu_flags():
    # -ffp-contract=fast: fused multiply-adds in the dot products (ISO C++17 mode
    # turns contraction off by default).
    flags = ["-O3", "-fPIC", "-shared", "-fopenmp-simd", "-ffp-contract=fast", "-Wall",
             "-Wno-sign-compare"]
    if platform.machine() in ("x86_64", "AMD64"):
        # Portable baseline; the AVX2/FMA code paths are chosen at run time (see
        # STMN_MULTIVERSION in the sources) rather than with -march=native.
        flags += ["-march=x86-64", "-mtune=generic", "-DSTMN_MULTIVERSION=1"]
    return flags


def _find_cuda_headers(tf_file):
    """The tensorflow wheel ships the CUDA headers it was built with."""
    base = os.path.join(os.path.dirname(tf_file), "include", "third_party", "gpus", "cuda")
    include = os.path.join(base, "include")
    return include if os.path.isdir(include) else None


def _run(cmd, what):
    print("  $ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise BuildError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}")


def _newer(target, sources):
    if not os.path.exists(target):
        return True
    t = os.path.getmtime(target)
    return any(os.path.getmtime(s) > t for s in sources)


def build_library(name, folder, use_cuda=True, force=False, cxx=None, nvcc=None):
    """Compiles custom_ops/<folder> into stmn_tf/ops/<name>. Returns a short report."""
    src_dir = os.path.join(ROOT, "custom_ops", folder)
    target = os.path.join(ROOT, "stmn_tf", "ops", name)
    sources = sorted(os.path.join(src_dir, f) for f in os.listdir(src_dir)
                     if f.endswith((".cc", ".h", ".cu", ".cuh")))
    cc_sources = [s for s in sources if s.endswith(".cc") and not s.endswith(".cu.cc")]
    # *.cu: the kernels, TensorFlow-free, compiled without TensorFlow's flags;
    # *.cu.cc: the functors that glue them to TensorFlow, compiled with them.
    cu_sources = [s for s in sources if s.endswith(".cu")]
    glue_sources = [s for s in sources if s.endswith(".cu.cc")]
    cxx = cxx or os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise BuildError(
            f"No C++ compiler ('{cxx}') found: install g++ (C++17) to build the MatchTrans "
            "op. stmn_tf still works without it through the pure-TF implementation "
            "(implementation='tf')."
        )
    nvcc = nvcc or shutil.which("nvcc") if use_cuda else None
    stamp = target + ".cuda" if nvcc else target + ".cpu"
    if not force and not _newer(target, sources + [__file__]) and os.path.exists(stamp):
        return f"{name}: up to date"

    compile_flags, link_flags, tf_file = _tf_flags()
    cuda_include = _find_cuda_headers(tf_file) if nvcc else None
    with tempfile.TemporaryDirectory() as tmp:
        objects, defines, extra_link = [], [], []
        if nvcc and cuda_include and (cu_sources or glue_sources):
            try:
                for src in cu_sources + glue_sources:
                    obj = os.path.join(tmp, os.path.basename(src) + ".o")
                    glue = src.endswith(".cu.cc")
                    _run([nvcc, "-c", src, "-o", obj, "-x", "cu", "-Xcompiler", "-fPIC",
                          # nvcc's own CUDA headers here: the wheel's CUDA 12.5 headers
                          # shadow nvcc 13's crt/ and break its launch stubs. The host
                          # compile below uses the wheel's, as TensorFlow's headers do.
                          "-I", src_dir] + CUDA_ARCH_FLAGS + ["-O3", "-DNDEBUG"]
                         + (["-DGOOGLE_CUDA=1", "--expt-relaxed-constexpr",
                             "-diag-suppress=20012,20014,20015,20236,20013,174,611,177,1675"]
                            + compile_flags if glue else []),
                         f"nvcc {os.path.basename(src)}")
                    objects.append(obj)
                roots = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"),
                         os.path.dirname(os.path.dirname(os.path.realpath(nvcc))),
                         "/usr/local/cuda"]
                libdir = next((d for root in roots if root
                               for d in (os.path.join(root, "lib64"),
                                         os.path.join(root, "targets", "x86_64-linux", "lib"))
                               if os.path.exists(os.path.join(d, "libcudart_static.a"))),
                              None)
                if libdir is None:
                    raise BuildError("libcudart_static.a not found next to nvcc")
                defines = ["-DGOOGLE_CUDA=1", "-I", cuda_include]
                extra_link = ["-L" + libdir, "-l:libcudart_static.a", "-ldl", "-lrt",
                              "-lpthread"]
            except BuildError as e:
                print(f"warning: CUDA kernels not built, building the CPU-only library:\n{e}",
                      file=sys.stderr)
                objects, defines, extra_link = [], [], []
        cuda_built = bool(objects)
        out_tmp = os.path.join(tmp, name)
        _run([cxx] + _cpu_flags() + compile_flags + defines + ["-I", src_dir]
             + cc_sources + objects + ["-o", out_tmp] + link_flags + extra_link,
             f"{cxx} {name}")
        # Replace the library in one step, so a failed build never leaves half a file.
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(out_tmp, target + ".tmp")
        os.replace(target + ".tmp", target)
    for old in (target + ".cuda", target + ".cpu"):
        if os.path.exists(old):
            os.remove(old)
    with open(target + (".cuda" if cuda_built else ".cpu"), "w") as f:
        f.write("built with CUDA kernels\n" if cuda_built else "CPU kernels only\n")
    return f"{name}: built ({'CPU + CUDA sm_80/sm_90' if cuda_built else 'CPU only'})"


def build_all(use_cuda=True, force=False):
    reports = []
    for name, folder in OPS.items():
        reports.append(build_library(name, folder, use_cuda=use_cuda, force=force))
    return reports


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-cuda", action="store_true", help="skip the CUDA kernels")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    try:
        for line in build_all(use_cuda=not args.no_cuda, force=args.force):
            print(line)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
