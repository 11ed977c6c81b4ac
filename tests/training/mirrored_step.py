"""Run as a script by test_distributed.py: one device vs MirroredStrategy on 2 CPUs.

Prints one JSON line: the losses and weights' summary of two training steps under
each strategy, started from the same weights with the same global batch.

It splits the CPU into two logical devices, which has to happen before TensorFlow
initialises its devices: hence a fresh process rather than a pytest test body.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from stmn_tf.training import distribution  # noqa: E402

distribution.configure_cpu_replicas(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from stmn_tf import configs  # noqa: E402
from stmn_tf.training import trainer  # noqa: E402
from tests.models.synthetic import make_clip  # noqa: E402


def deterministic_config(clip_norm):
    """The tiny R-FCN with every random choice of the loss switched off.

    RPN anchors and head RoIs are sampled at random (`targets.sample_balanced`); the
    two runs draw different numbers, so the comparison would only hold loosely. With
    sampling budgets above the candidate counts (324 anchors of a 96x96 frame, 100
    proposals + 3 ground-truth boxes) and foreground fractions of 1, every candidate is
    taken and the losses are deterministic functions of the weights and the batch.
    """
    config = configs.synthetic_tiny_rfcn()
    config.model.override({"num_classes": 2,
                           "rpn": {"batch_size": 100000, "positive_fraction": 1.0},
                           "roi_sampling": {"num_rois": 128, "foreground_fraction": 1.0}})
    config.train.optimizer.override({"learning_rate": 0.05, "momentum": 0.9, "schedule": "constant",
                                     "warmup_steps": 0, "weight_decay": 1e-3,
                                     "clip_norm": clip_norm})
    return config


def global_batch():
    """Two clips of two frames (one per replica under MirroredStrategy)."""
    clips = [make_clip(frames=2, seed=seed) for seed in (0, 1)]
    return {key: np.concatenate([c[key] for c in clips]) for key in clips[0]}


def run(strategy, config, weights, batch, steps=2):
    state = trainer.TrainingState(config, strategy)
    state.model.set_weights(weights)
    step = trainer.make_train_step(state, strategy, config.train.optimizer.weight_decay,
                                   config.train.optimizer.clip_norm)
    replicas = strategy.num_replicas_in_sync
    per_replica = batch["images"].shape[0] // replicas

    def value_fn(context):
        start = context.replica_id_in_sync_group * per_replica
        return {k: tf.constant(v[start:start + per_replica]) for k, v in batch.items()}

    losses = []
    for _ in range(steps):
        distributed = strategy.experimental_distribute_values_from_function(value_fn)
        losses.append({k: float(v) for k, v in step(distributed).items()})
    return losses, [np.asarray(w) for w in state.model.get_weights()]


def main():
    clip_norm = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    config = deterministic_config(clip_norm)
    keras.utils.set_random_seed(0)
    from stmn_tf.models.builders import build_model

    initial = build_model(config.model).get_weights()
    batch = global_batch()
    one_losses, one_weights = run(tf.distribute.OneDeviceStrategy("/cpu:0"), config, initial, batch)
    mirrored = distribution.select_strategy("mirrored")
    assert mirrored.num_replicas_in_sync == 2, mirrored.num_replicas_in_sync
    two_losses, two_weights = run(mirrored, config, initial, batch)
    update = max(float(np.max(np.abs(w - i))) for w, i in zip(one_weights, initial))
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(one_weights, two_weights))
    print(json.dumps({"one_device": one_losses, "mirrored": two_losses, "update": update,
                      "difference": difference}))


if __name__ == "__main__":
    main()
