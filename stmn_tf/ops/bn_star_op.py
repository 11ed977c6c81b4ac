"""BN* (Xiao & Lee, ECCV 2018, Sec. 3.2 and Fig. 3): squashes a gate into [0, 1].

As the authors implemented it (their Lua Torch code): the statistics are the mean and the
unbiased standard deviation of the *positive* entries of the whole tensor (batch,
space and channels together), the upper bound is `ub = mean + K * std`, and the output
is `clip(x, 0, ub) / ub`. No running statistics are kept, so training and inference
compute the same thing and any sequence length works. The bound is a constant for the
gradient (the authors do not back-propagate through it).
"""

import keras
import tensorflow as tf


def _statistics_dtype(dtype):
    # Under mixed precision the sums over a whole feature map overflow or lose all
    # precision in float16, so the statistics are always at least float32.
    return tf.float64 if dtype == tf.float64 else tf.float32


def bn_star_upper_bound(x, std_multiplier=3.0):
    """The BN* upper bound `mean + K * std` of the positive entries of `x`.

    Args:
      x: float tensor of any shape.
      std_multiplier: float. K. Defaults to 3.0.

    Returns:
      A scalar in float32 (float64 for float64 input), without gradient. It is 1 when
      `x` has fewer than two positive entries or when the statistics are not finite.
    """
    x = tf.convert_to_tensor(x)
    dtype = _statistics_dtype(x.dtype)
    x = tf.stop_gradient(tf.cast(tf.reshape(x, [-1]), dtype))
    # Masked sums instead of tf.boolean_mask keep the shapes static (XLA-friendly).
    positive = tf.cast(x > 0, dtype)
    count = tf.reduce_sum(positive)
    safe_count = tf.maximum(count, 2.0)
    mean = tf.reduce_sum(x * positive) / safe_count
    # Two passes (mean, then squared deviations) for a stable unbiased variance.
    variance = tf.reduce_sum(tf.square((x - mean) * positive)) / (safe_count - 1.0)
    upper_bound = mean + std_multiplier * tf.sqrt(variance)
    valid = tf.logical_and(count >= 2.0, tf.math.is_finite(upper_bound))
    valid = tf.logical_and(valid, upper_bound > 0)
    return tf.where(valid, upper_bound, tf.ones_like(upper_bound))


def bn_star(x, std_multiplier=3.0):
    """BN*: `clip(x, 0, ub) / ub` with `ub = mean + K * std` of the positive entries.

    Args:
      x: float tensor of any shape, usually the ReLU'd gate pre-activations
        `[B, H, W, C]`.
      std_multiplier: float. K, the number of standard deviations above the mean
        where the squashing saturates. Defaults to 3.0 (the paper's K).

    Returns:
      A tensor of the shape and dtype of `x` with values in [0, 1]. The gradient
      treats `ub` as a constant: `1 / ub` where `0 < x < ub`, else 0.
    """
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        raise ValueError(f"bn_star: x must be a float tensor, got dtype {x.dtype.name}")
    upper_bound = bn_star_upper_bound(x, std_multiplier)
    compute = tf.cast(x, upper_bound.dtype)
    y = keras.ops.clip(compute, 0.0, upper_bound) / upper_bound
    return tf.cast(y, x.dtype)
