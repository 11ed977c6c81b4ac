"""PS-RoI average pooling against a NumPy loop reference written here (R-FCN's caffe kernel)."""

import math

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.ops.ps_roi_pooling import ps_roi_average_pool


def reference(maps, rois, bins, channels):
    """R-FCN's psroi_pooling forward, with continuous RoIs (no rounding, no +1)."""
    n, height, width, _ = maps.shape
    out = np.zeros((n, rois.shape[1], bins, bins, channels), np.float64)
    for b in range(n):
        for r in range(rois.shape[1]):
            y1, x1, y2, x2 = rois[b, r]
            bin_h = max(y2 - y1, 0.1) / bins
            bin_w = max(x2 - x1, 0.1) / bins
            for i in range(bins):
                hs = min(max(math.floor(y1 + i * bin_h), 0), height)
                he = min(max(math.ceil(y1 + (i + 1) * bin_h), 0), height)
                for j in range(bins):
                    ws = min(max(math.floor(x1 + j * bin_w), 0), width)
                    we = min(max(math.ceil(x1 + (j + 1) * bin_w), 0), width)
                    for d in range(channels):
                        c = (d * bins + i) * bins + j
                        if he <= hs or we <= ws:
                            continue
                        out[b, r, i, j, d] = maps[b, hs:he, ws:we, c].mean()
    return out


def random_rois(rng, n, r, height, width):
    y = np.sort(rng.uniform(-2, height + 2, (n, r, 2)), axis=-1)
    x = np.sort(rng.uniform(-2, width + 2, (n, r, 2)), axis=-1)
    return np.stack([y[..., 0], x[..., 0], y[..., 1], x[..., 1]], -1).astype("float32")


@pytest.mark.parametrize("bins,channels", [(3, 2), (7, 3)])
def test_matches_numpy_reference(rng, bins, channels):
    maps = rng.normal(size=(2, 9, 11, bins * bins * channels)).astype("float32")
    rois = random_rois(rng, 2, 6, 9, 11)
    rois[0, 0] = [3.0, 4.0, 3.0, 4.0]  # a point: the 0.1 minimum size
    rois[1, 0] = [20.0, 20.0, 25.0, 25.0]  # outside the map: all bins empty -> 0
    got = ps_roi_average_pool(maps, rois, bins, channels).numpy()
    np.testing.assert_allclose(got, reference(maps, rois, bins, channels), atol=1e-5)
    assert np.all(got[1, 0] == 0.0)


def test_hand_computed_2x2():
    # A 4x4 map, 2x2 bins, one output channel: each bin reads its own channel, so
    # channel (i*2 + j) holds 10 * (i*2 + j) + the cell's row index.
    rows = np.arange(4, dtype="float32")[:, None] * np.ones((1, 4), "float32")
    maps = np.stack([10.0 * g + rows for g in range(4)], -1)[None]  # [1, 4, 4, 4]
    rois = np.array([[[0.0, 0.0, 4.0, 4.0]]], "float32")
    got = ps_roi_average_pool(maps, rois, 2, 1).numpy()[0, 0, :, :, 0]
    # top bins: rows 0-1 (mean 0.5); bottom bins: rows 2-3 (mean 2.5).
    np.testing.assert_allclose(got, [[0.5, 10.5], [22.5, 32.5]])


def test_gradient_matches_numeric(rng):
    maps = tf.constant(rng.normal(size=(1, 4, 5, 2 * 2)), tf.float64)
    rois = tf.constant(random_rois(rng, 1, 3, 4, 5), tf.float64)
    theoretical, numeric = tf.test.compute_gradient(
        tf.function(lambda m: ps_roi_average_pool(m, rois, 2, 1)), [maps]
    )
    np.testing.assert_allclose(theoretical[0], numeric[0], atol=1e-6)


def test_xla_and_empty_rois(rng):
    maps = rng.normal(size=(2, 6, 7, 9 * 4)).astype("float32")
    rois = random_rois(rng, 2, 4, 6, 7)
    fn = tf.function(lambda m, r: ps_roi_average_pool(m, r, 3, 4), jit_compile=True)
    np.testing.assert_allclose(fn(maps, rois).numpy(), reference(maps, rois, 3, 4), atol=1e-5)
    empty = ps_roi_average_pool(maps, np.zeros((2, 0, 4), "float32"), 3, 4)
    assert tuple(empty.shape) == (2, 0, 3, 3, 4)
