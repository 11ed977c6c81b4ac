"""The standalone GPU check (make gpu-check) on a machine without a GPU: its build, its
host reference (the CPU generic path compiled by nvcc) against NumPy, its no-GPU line,
its report format, and the PyTorch peer where PyTorch imports."""

import importlib.util
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.ops.match_trans_reference import numpy_match_trans, numpy_memory_gradient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK_DIR = os.path.join(ROOT, "custom_ops", "match_trans", "gpu_check")
SCRIPT = os.path.join(CHECK_DIR, "gpu_check.py")


def load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(CHECK_DIR, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gpu_check = load("gpu_check")
needs_nvcc = pytest.mark.skipif(gpu_check.find_nvcc() is None, reason="nvcc not installed")


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    """The check library built for sm_90 only (quicker), loaded without a GPU."""
    build_dir = str(tmp_path_factory.mktemp("gpu_check"))
    path = gpu_check.build(gpu_check.find_nvcc(), build_dir,
                           arch_flags=["-gencode=arch=compute_90,code=sm_90"])
    return gpu_check.Library(path)


def test_without_nvcc_prints_one_line_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check, "find_nvcc", lambda: None)
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("gpu-check: skipped, no nvcc found")


@pytest.mark.slow
@needs_nvcc
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_host_reference_matches_numpy(library, dtype):
    tol = {np.float16: 2e-2, np.float32: 1e-5, np.float64: 1e-12}[dtype]
    for k, power, case in itertools.product(range(4), gpu_check.POWERS,
                                            gpu_check.AGREEMENT_CASES):
        f, fp, m, up = gpu_check.make_inputs(np, case, np.dtype(dtype), seed=k)
        aligned, coef, grad = library.reference(f, fp, m, up, k, power)
        ref_aligned, ref_coef = numpy_match_trans(f, fp, m, k, power)
        ref_grad = numpy_memory_gradient(coef.astype(np.float64), up, k)
        msg = f"{case[0]} k={k} power={power} {np.dtype(dtype).name}"
        np.testing.assert_allclose(coef, ref_coef, rtol=tol, atol=tol, err_msg=msg)
        np.testing.assert_allclose(aligned, ref_aligned, rtol=tol, atol=tol, err_msg=msg)
        np.testing.assert_allclose(grad, ref_grad, rtol=tol, atol=tol, err_msg=msg)
        if case[0] == "zeros":  # a zero feature vector keeps its memory
            side = 2 * k + 1
            np.testing.assert_array_equal(coef[0, 1, 2], np.eye(side * side)[k * side + k])


@pytest.mark.slow
@needs_nvcc
def test_without_a_device_prints_one_line_and_exits_0(library):
    count, reason = library.device_count()
    if count > 0:
        pytest.skip("this machine has a CUDA device")
    build_dir = os.path.dirname(library.lib._name)  # the fixture's up-to-date build
    out = subprocess.run([sys.executable, SCRIPT, "--build-dir", build_dir],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("\n") == 1
    assert out.stdout.startswith("gpu-check: skipped, no CUDA device (")
    assert reason in out.stdout


def fake_result():
    agreement = [{"dtype": "float32", "k": 2, "power": 4.0, "case": "zeros", "shape": [2, 7, 9, 70, 40],
                  "aligned": 3e-7, "coefficients": 1e-7, "memory_gradient": 2e-7, "ok": True},
                 {"dtype": "float16", "k": 0, "case": "single", "shape": [1, 1, 1, 33, 5],
                  "aligned": 0.5, "coefficients": 0.0, "memory_gradient": 0.0, "ok": False}]
    timing = [{"map": "22x38", "implementation": "cuda op", "dtype": "float32",
               "forward_ms_per_frame": 0.05, "forward_backward_ms_per_frame": 0.08},
              {"map": "22x38", "implementation": "pytorch unfold", "dtype": "float32",
               "forward_ms_per_frame": 0.04, "forward_backward_ms_per_frame": 0.2},
              {"map": "22x38", "implementation": "pytorch shifted", "dtype": "float32",
               "forward_ms_per_frame": 0.3, "forward_backward_ms_per_frame": 0.6}]
    return agreement, timing


def test_summary_and_report_format():
    agreement, timing = fake_result()
    worst, targets = gpu_check.summarise(agreement, timing)
    assert worst == {"float32": 3e-7, "float16": 0.5}
    # 0.05 ms meets the 0.1 ms target but is slower than the unfold peer's 0.04 ms.
    assert targets == {"op_forward_22x38_at_most_0.1_ms": True,
                       "op_forward_faster_than_best_pytorch": False}
    result = {"device": "Fake GPU", "repeats": 5, "agreement": agreement, "timing": timing,
              "peer": {"available": True, "agreement": {"unfold": 1e-7}},
              "max_difference": worst, "targets": targets, "agreement_ok": False}
    text = gpu_check.format_report(result)
    lines = text.splitlines()
    assert lines[0].startswith("gpu-check: MatchTrans CUDA kernels on Fake GPU")
    assert ("| float32 | 2 | 4 | zeros (2, 7, 9, 70, 40) | 3.00e-07 | 1.00e-07 | 2.00e-07 | yes |"
            in lines)
    assert ("| float16 | 0 | 1 | single (1, 1, 1, 33, 5) | 5.00e-01 | 0.00e+00 | 0.00e+00 | NO |"
            in lines)
    assert "| 22x38 | pytorch unfold | float32 | 0.0400 | 0.2000 |" in lines
    assert json.loads(lines[-1]) == result


def test_report_without_peer():
    agreement, timing = fake_result()
    result = {"device": "Fake GPU", "repeats": 5, "agreement": agreement, "timing": timing[:1],
              "peer": {"available": False, "reason": "PyTorch does not import"}}
    text = gpu_check.format_report(result)
    assert "PyTorch peer: not run (PyTorch does not import)" in text
    assert gpu_check.summarise(agreement, timing[:1])[1] == {
        "op_forward_22x38_at_most_0.1_ms": True}


def test_make_target_needs_no_tensorflow():
    """make gpu-check runs the script with the system python, not after make install."""
    out = subprocess.run(["make", "-n", "gpu-check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "gpu_check.py" in out.stdout
    assert "pip" not in out.stdout and "build_ops" not in out.stdout


@pytest.mark.parametrize("power", [1.0, 4.0])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_torch_peer_matches_numpy(k, power):
    torch = pytest.importorskip("torch")
    peer = load("torch_peer")
    f, fp, m, _ = gpu_check.make_inputs(np, gpu_check.AGREEMENT_CASES[0], np.float64, seed=k)
    ref_aligned, ref_coef = numpy_match_trans(f, fp, m, k, power)
    tf_, tfp, tm = (torch.from_numpy(x) for x in (f, fp, m))
    for name, fn in peer.FORMULATIONS.items():
        np.testing.assert_allclose(fn(tf_, tfp, tm, k, power).numpy(), ref_aligned, rtol=1e-10,
                                   atol=1e-10, err_msg=name)
    np.testing.assert_allclose(peer.coefficients_unfold(tf_, tfp, k, power).numpy(), ref_coef,
                               atol=1e-12)
    np.testing.assert_allclose(peer.coefficients_shifted(tf_, tfp, k, power).numpy(), ref_coef,
                               atol=1e-12)
