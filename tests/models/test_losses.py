"""The RPN and R-FCN losses on hand-computed values."""

import numpy as np

from stmn_tf.models import losses


def test_smooth_l1_hand_computed():
    got = losses.smooth_l1(np.array([0.5, -2.0, 0.1], "float32"), sigma=1.0).numpy()
    np.testing.assert_allclose(got, [0.125, 1.5, 0.005], rtol=1e-6)
    # sigma 3: quadratic below 1/9.
    got = losses.smooth_l1(np.array([0.1, 1.0], "float32"), sigma=3.0).numpy()
    np.testing.assert_allclose(got, [0.045, 1.0 - 0.5 / 9.0], rtol=1e-5)


def test_rpn_losses_hand_computed():
    logits = np.array([[0.0, 2.0, -1.0, 5.0]], "float32")
    labels = np.array([[1, 0, -1, 1]])
    deltas = np.zeros((1, 4, 4), "float32")
    targets = np.zeros((1, 4, 4), "float32")
    targets[0, 0, 0] = 1.0  # positive anchor 0: |d| = 1 >= 1/9 -> 1 - 1/18
    targets[0, 1, 0] = 7.0  # a negative anchor's target does not count
    cls, box = losses.rpn_losses(logits, deltas, labels, targets)
    sampled_ce = [np.log(2.0), np.log1p(np.exp(2.0)), np.log1p(np.exp(-5.0))]
    np.testing.assert_allclose(float(cls), np.mean(sampled_ce), rtol=1e-5)
    np.testing.assert_allclose(float(box), (1.0 - 0.5 / 9.0) / 3.0, rtol=1e-5)


def test_rfcn_losses_hand_computed():
    logits = np.zeros((1, 3, 3), "float32")  # uniform over 3 classes: CE = log 3
    labels = np.array([[2, 0, 1]])
    valid = np.array([[1.0, 1.0, 0.0]], "float32")
    foreground = np.array([[1.0, 0.0, 0.0]], "float32")
    deltas = np.zeros((1, 3, 4), "float32")
    targets = np.full((1, 3, 4), 0.5, "float32")
    cls, box = losses.rfcn_losses(logits, deltas, labels, valid, foreground, targets)
    np.testing.assert_allclose(float(cls), np.log(3.0), rtol=1e-6)
    np.testing.assert_allclose(float(box), 4 * 0.125 / 2.0, rtol=1e-6)  # / 2 valid RoIs


def test_rfcn_losses_ohem_keeps_the_hardest():
    logits = np.array([[[5.0, 0.0], [0.0, 0.0], [0.0, 5.0]]], "float32")
    labels = np.array([[0, 0, 0]])  # RoI 2 is very wrong, RoI 0 very right
    ones = np.ones((1, 3), "float32")
    zeros = np.zeros((1, 3, 4), "float32")
    cls, _ = losses.rfcn_losses(logits, zeros, labels, ones, 0 * ones, zeros, ohem_rois=1)
    np.testing.assert_allclose(float(cls), np.log1p(np.exp(5.0)), rtol=1e-5)
