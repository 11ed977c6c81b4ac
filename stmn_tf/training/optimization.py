"""The optimizer of the paper's recipe: SGD with momentum, warm-up, step or plateau decay.

The learning rate is `LearningRate(step)`: a linear warm-up from
`warmup_factor * learning_rate`, then either a piecewise-constant decay at
`decay_steps` or (`schedule: plateau`) the base rate times a scale that
`PlateauController` lowers when the training loss stops improving (the paper: "1e-3,
then 1e-4 at plateau"). The scale is a variable, so it is checkpointed and read by the
compiled step without retracing.
"""

import math

import keras
import tensorflow as tf

SCHEDULES = ("constant", "step", "plateau")


@keras.saving.register_keras_serializable(package="stmn_tf")
class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Warm-up, then a step decay, times a plateau scale.

    Args:
        learning_rate: float. The base rate.
        warmup_steps: int. Linear warm-up length (0: none).
        warmup_factor: float. The warm-up starts at this fraction of the base rate.
        decay_steps: list of int. Steps at which the rate is multiplied by
            `decay_factor` (schedule "step").
        decay_factor: float.
        scale: optional scalar `tf.Variable` multiplying the rate (the plateau
            scale, written by `PlateauController`).

    Call arguments:
        step: int scalar, the optimizer's iteration.

    Returns:
        float32 scalar.
    """

    def __init__(self, learning_rate, warmup_steps=0, warmup_factor=0.1, decay_steps=(),
                 decay_factor=0.1, scale=None):
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)
        self.decay_steps = [int(s) for s in decay_steps]
        self.decay_factor = float(decay_factor)
        self.scale = scale

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        rate = tf.constant(self.learning_rate, tf.float32)
        for boundary in self.decay_steps:
            rate = tf.where(step >= boundary, rate * self.decay_factor, rate)
        if self.warmup_steps > 0:
            progress = tf.minimum(step / self.warmup_steps, 1.0)
            rate = rate * (self.warmup_factor + (1.0 - self.warmup_factor) * progress)
        if self.scale is not None:
            rate = rate * tf.cast(self.scale, tf.float32)
        return rate

    def get_config(self):
        # The scale variable is state, not configuration: it lives in the checkpoint.
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps,
                "warmup_factor": self.warmup_factor, "decay_steps": self.decay_steps,
                "decay_factor": self.decay_factor}


class PlateauController(tf.Module):
    """Lowers the learning rate when the smoothed training loss stops improving.

    The loss is smoothed with an exponential moving average (`smoothing`), since a
    single detection batch is far too noisy to compare; when its best value has not
    improved by `min_delta` (relative) for `patience` steps, `scale` is multiplied by
    `factor` and the count restarts. Every worker sees the same all-reduced loss, so
    every worker takes the same decision.

    Args:
        patience: int. Steps without improvement before a decay.
        factor: float. The decay factor (0.1: 1e-3 -> 1e-4).
        smoothing: float. EMA weight of the past.
        min_delta: float. The relative improvement that counts.
    """

    def __init__(self, patience, factor=0.1, smoothing=0.98, min_delta=1e-3, name="plateau"):
        super().__init__(name=name)
        self.patience = int(patience)
        self.factor = float(factor)
        self.smoothing = float(smoothing)
        self.min_delta = float(min_delta)
        self.scale = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="scale")
        self.average = tf.Variable(math.nan, trainable=False, dtype=tf.float32, name="average")
        self.best = tf.Variable(math.inf, trainable=False, dtype=tf.float32, name="best")
        self.since_best = tf.Variable(0, trainable=False, dtype=tf.int64, name="since_best")

    def update(self, loss):
        """Takes one step's loss (a Python float); returns True when it lowered the rate."""
        average = float(self.average.numpy())
        average = loss if math.isnan(average) else self.smoothing * average + (1 - self.smoothing) * loss
        self.average.assign(average)
        if average < float(self.best.numpy()) * (1.0 - self.min_delta):
            self.best.assign(average)
            self.since_best.assign(0)
            return False
        self.since_best.assign_add(1)
        if int(self.since_best.numpy()) < self.patience:
            return False
        self.scale.assign(self.scale * self.factor)
        self.since_best.assign(0)
        self.best.assign(average)  # a fresh start at the new rate
        return True


def build_optimizer(config, plateau=None):
    """`OptimizerConfig` (+ the plateau controller, schedule "plateau") -> (optimizer, schedule).

    Weight decay is not Keras' decoupled `weight_decay` (which shrinks the weights
    by lr * wd outside the momentum) but the L2 term of the authors' Torch / Caffe
    SGD, added to the loss by the loop (`l2_loss`), so it goes through the momentum
    as theirs did. Call inside `strategy.scope()`.
    """
    if config.schedule not in SCHEDULES:
        raise ValueError(f"optimizer.schedule must be one of {SCHEDULES}, got {config.schedule!r}")
    schedule = LearningRate(
        config.learning_rate,
        warmup_steps=config.warmup_steps,
        warmup_factor=config.warmup_factor,
        decay_steps=config.decay_steps if config.schedule == "step" else (),
        decay_factor=config.decay_factor,
        scale=plateau.scale if plateau is not None else None,
    )
    optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum)
    return optimizer, schedule


def l2_loss(variables, weight_decay):
    """`weight_decay / 2 * sum ||w||^2` over the kernels (biases and BN are not decayed,
    as py-R-FCN's `decay_mult: 0` on biases)."""
    kernels = [v for v in variables if v.path.endswith("kernel")]
    if not weight_decay or not kernels:
        return tf.constant(0.0, tf.float32)
    return 0.5 * weight_decay * tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32)))
                                          for v in kernels])
