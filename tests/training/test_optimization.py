"""Learning-rate schedules, the plateau controller, weight decay, strategy selection."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.configs import OptimizerConfig
from stmn_tf.training import distribution
from stmn_tf.training import optimization


def test_warmup_then_steps():
    schedule = optimization.LearningRate(1.0, warmup_steps=10, warmup_factor=0.1,
                                         decay_steps=[20, 30], decay_factor=0.1)
    rates = [float(schedule(step)) for step in (0, 5, 10, 19, 20, 29, 30, 100)]
    np.testing.assert_allclose(rates, [0.1, 0.55, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)


def test_plateau_lowers_the_rate_after_patience():
    plateau = optimization.PlateauController(patience=3, factor=0.1, smoothing=0.0)
    optimizer, schedule = optimization.build_optimizer(
        OptimizerConfig(learning_rate=1e-3, schedule="plateau"), plateau)
    decays = [plateau.update(loss) for loss in (5.0, 4.0, 3.0, 3.0, 3.1, 3.0, 2.0)]
    # Improving until 3.0, then three steps without improvement: one decay.
    assert decays == [False, False, False, False, False, True, False]
    assert float(schedule(0)) == pytest.approx(1e-4)
    assert float(optimizer.learning_rate) == pytest.approx(1e-4)
    assert float(plateau.scale.numpy()) == pytest.approx(0.1)


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="optimizer.schedule must be one of"):
        optimization.build_optimizer(OptimizerConfig(schedule="cosine"))


def test_l2_loss_counts_kernels_only():
    layer = keras.layers.Dense(2)
    layer.build((None, 2))
    layer.kernel.assign(np.full((2, 2), 2.0, "float32"))
    layer.bias.assign(np.full((2,), 5.0, "float32"))
    # 0.1 / 2 * (4 entries * 2^2); the bias is not decayed.
    assert float(optimization.l2_loss(layer.weights, 0.1)) == pytest.approx(0.8)
    assert float(optimization.l2_loss(layer.weights, 0.0)) == 0.0


def test_tf_config_cluster_detection(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert not distribution.is_multi_worker_cluster()
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    assert distribution.is_multi_worker_cluster()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["localhost:1"]}}))
    assert not distribution.is_multi_worker_cluster()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
        distribution.is_multi_worker_cluster()


def test_unknown_strategy_is_rejected():
    with pytest.raises(ValueError, match="--strategy must be one of"):
        distribution.select_strategy("tpu")
