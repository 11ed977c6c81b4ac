"""The first-use check of the compiled op against the pure-TF twin, on the CPU.

On a GPU the same comparison runs with the CUDA kernels; here the CPU kernel passes,
and deliberately wrong results injected in its place must be caught.
"""

import importlib

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf import ops

self_check = importlib.import_module("stmn_tf.ops.match_trans_self_check")
RUN_OP = self_check._run_op  # the compiled op's kernels, before any monkeypatching


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
    monkeypatch.setattr(self_check, "_results", {})
    monkeypatch.setattr(self_check, "_all_gpus_passed", False)
    monkeypatch.delenv(self_check.ENV_VAR, raising=False)


def shifted_op(aligned_shift=0.0, gradient_scale=1.0):
    """The compiled op with its aligned memory shifted or its gradient scaled."""

    def run(features, prev_features, memory, upstream, k):
        aligned, grad = RUN_OP(features, prev_features, memory, upstream, k)
        return aligned + tf.cast(aligned_shift, aligned.dtype), grad * gradient_scale

    return run


def test_cpu_kernel_passes():
    differences = self_check.check_device("/CPU:0")
    assert set(differences) == {"float32", "float16"}
    for dtype, tolerance in (("float32", 1e-4), ("float16", 2e-2)):
        for name in ("aligned", "memory_gradient"):
            assert 0 <= differences[dtype][name] <= tolerance, (dtype, name)
    assert differences["float32"]["aligned"] < 1e-5


def test_wrong_forward_raises_naming_device_and_difference():
    with pytest.raises(self_check.MatchTransSelfCheckError,
                       match=r"failed on /CPU:0: .* float32 \(aligned differs by 0\.00[0-9]+;"
                             r".*implementation='tf'"):
        self_check.check_device("/CPU:0", run_op=shifted_op(aligned_shift=3e-3))


def test_wrong_gradient_raises():
    with pytest.raises(self_check.MatchTransSelfCheckError,
                       match=r"float32 \(memory_gradient differs by .*implementation='tf'"):
        self_check.check_device("/CPU:0", run_op=shifted_op(gradient_scale=1.01))


def test_non_finite_result_raises():
    with pytest.raises(self_check.MatchTransSelfCheckError, match=r"aligned differs by inf"):
        self_check.check_device("/CPU:0", run_op=shifted_op(aligned_shift=np.nan))


def test_failing_op_raises_with_the_hint():
    def broken(*args):
        raise tf.errors.InternalError(None, None, "CUDA kernel MatchTransForward failed")

    with pytest.raises(self_check.MatchTransSelfCheckError,
                       match=r"op failed on /CPU:0 \(float32\): CUDA kernel MatchTransForward"
                             r".*implementation='tf'"):
        self_check.check_device("/CPU:0", run_op=broken)


def test_ensure_checked_runs_once_and_remembers_a_failure():
    calls = []

    def counting(*args):
        calls.append(args[0].dtype)
        return RUN_OP(*args)

    self_check.ensure_checked(devices=["/CPU:0"], run_op=counting)
    self_check.ensure_checked(devices=["/CPU:0"], run_op=counting)
    assert calls == [tf.float32, tf.float16]  # one check, both dtypes

    wrong = shifted_op(aligned_shift=1.0)
    for _ in range(2):  # raised again on every later use, never a silent fallback
        with pytest.raises(self_check.MatchTransSelfCheckError, match="/device:CPU:0"):
            self_check.ensure_checked(devices=["/device:CPU:0"], run_op=wrong)


def test_environment_variable_disables_it(monkeypatch):
    monkeypatch.setenv(self_check.ENV_VAR, "0")
    self_check.ensure_checked(devices=["/CPU:0"], run_op=shifted_op(aligned_shift=1.0))
    assert self_check._results == {}
    monkeypatch.setenv(self_check.ENV_VAR, "1")
    with pytest.raises(self_check.MatchTransSelfCheckError):
        self_check.ensure_checked(devices=["/CPU:0"], run_op=shifted_op(aligned_shift=1.0))


def test_bad_environment_value(monkeypatch):
    monkeypatch.setenv(self_check.ENV_VAR, "yes")
    with pytest.raises(ValueError, match=r"STMN_MATCHTRANS_SELF_CHECK must be 0 or 1, got 'yes'"):
        self_check.ensure_checked(devices=[])


def test_op_wrapper_runs_the_check_before_the_op(monkeypatch, rng):
    """ops.match_trans checks the devices that _gpu_devices lists (here the CPU)."""
    monkeypatch.setattr(self_check, "_gpu_devices", lambda: ["/CPU:0"])
    monkeypatch.setattr(self_check, "_run_op", shifted_op(aligned_shift=1.0))
    x = rng.normal(size=(1, 3, 4, 5)).astype(np.float32)
    with pytest.raises(self_check.MatchTransSelfCheckError, match="failed on /CPU:0"):
        ops.match_trans(x, x, x, k=1, implementation="custom_op")
    with pytest.raises(self_check.MatchTransSelfCheckError, match="failed on /CPU:0"):
        ops.match_trans_coefficients(x, x, k=1, implementation="custom_op")
    # Inside tf.function too: the check runs eagerly while tracing (autograph may wrap
    # the error in its StagingError, with the same message).
    fn = tf.function(lambda a: ops.match_trans(a, a, a, k=1, implementation="custom_op"))
    with pytest.raises(Exception, match="MatchTrans self-check failed on /CPU:0"):
        fn(x)
    # Once every GPU passed, later uses skip the check entirely.
    monkeypatch.setattr(self_check, "_run_op", RUN_OP)
    monkeypatch.setattr(self_check, "_results", {})
    ops.match_trans(x, x, x, k=1, implementation="custom_op")
    assert self_check._all_gpus_passed and list(self_check._results) == ["/CPU:0"]
    monkeypatch.setattr(self_check, "_run_op", shifted_op(aligned_shift=1.0))
    ops.match_trans(x, x, x, k=1, implementation="custom_op")
    # The twin never runs the check.
    np.testing.assert_allclose(ops.match_trans(x, x, x, k=1, implementation="tf").shape,
                               x.shape)
