"""Shared test set-up: quiet TensorFlow, deterministic seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _no_leftover_caching_device():
    """Undoes what a failed `tf.scan` trace leaves behind.

    `tf.scan` sets a caching device on TensorFlow's v1 variable scope while it traces
    its body and resets it only when the body returns: a test that expects an error
    raised inside a scanned layer leaves it set, and the next test's
    `tf.distribute` strategy scope then fails with "Caching devices is not yet
    supported when eager execution is enabled". The public setter refuses in eager
    mode, hence the attribute.
    """
    yield
    import sys

    if "tensorflow" in sys.modules:
        scope = sys.modules["tensorflow"].compat.v1.get_variable_scope()
        scope._caching_device = None


def pytest_collection_modifyitems(config, items):
    """`make test` runs on 2 workers (pytest-xdist, `--dist loadgroup`): each test
    module stays on one worker, so that its module fixtures are built once, and the
    serving tests share one worker for their session fixtures (an exported model)."""
    root = os.path.dirname(os.path.abspath(__file__))
    for item in items:
        path = os.path.relpath(str(item.path), root)
        group = "serving" if path.startswith("serving" + os.sep) else path
        item.add_marker(pytest.mark.xdist_group(group))
