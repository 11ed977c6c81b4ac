"""The one training step: what `model.fit` (`TwoStageDetector.train_step`) and the
distributed loop of train.py (`trainer.make_train_step`) both run on each replica.

    losses   = model.compute_losses(batch)               # means over the replica's frames
    loss     = (total_loss + weight decay + layer losses) / replicas
    gradients: all-reduced over the replicas here, clipped by their global norm,
               dropped (zeros) when the global loss is not finite, then applied

The gradients are all-reduced here rather than inside the optimizer, because the
global-norm clipping and the finiteness guard need the gradient of the whole global
batch (Keras clips before its own all-reduce, i.e. per replica). Keras' optimizers
all-reduce what they are given once more, so each replica hands them 1/N of the
reduced gradient: the sum is the reduced gradient. With one replica (and in `fit`
on one device) every all-reduce is the identity. BN* normalises over each replica's
own tensor (the paper computes it per batch); the backbone's batch norm is frozen, so
no statistics need synchronising.
"""

import keras
import tensorflow as tf

from stmn_tf.training.optimization import l2_loss


def replica_train_step(model, optimizer, batch, weight_decay=0.0, clip_norm=0.0):
    """One optimizer step on this replica's `batch`, inside a replica context.

    Args:
        model: an `RFCN` or `STMN` (anything with `compute_losses`).
        optimizer: a Keras optimizer, or a `keras.optimizers.LossScaleOptimizer`
            (mixed precision: the loss is scaled, the clipping norm with it).
        batch: this replica's batch, the `compute_losses` dict.
        weight_decay: float. L2 on the kernels (`optimization.l2_loss`). Defaults to 0.
        clip_norm: float. Clip the global batch's gradient to this global norm; 0 =
            off. Defaults to 0.

    Returns:
        dict of float32 scalars: this replica's `compute_losses` (means over its
        frames) and `regularisation_loss`; the global-batch values are their mean
        over the replicas. When the global `total_loss` is not finite nothing is
        applied (the weights stay those of the last good step) and the loss says so.
    """
    context = tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        losses = model.compute_losses(batch, training=True)
        regularisation = l2_loss(variables, weight_decay)
        if model.losses:  # layer losses (none in the detectors themselves)
            regularisation = regularisation + tf.add_n(
                [tf.cast(loss, tf.float32) for loss in model.losses])
        # This replica's share of the global-batch mean.
        loss = (losses["total_loss"] + regularisation) / replicas
        scaled = optimizer.scale_loss(loss)
    gradients = tape.gradient(scaled, variables)
    present = [i for i, g in enumerate(gradients) if g is not None]
    reduced = context.all_reduce(tf.distribute.ReduceOp.SUM, [gradients[i] for i in present])
    global_loss = context.all_reduce(tf.distribute.ReduceOp.SUM, loss)
    if clip_norm > 0:
        # Under mixed precision the gradients carry the loss scale.
        scale = 1.0
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            scale = tf.cast(optimizer.dynamic_scale, tf.float32)
        reduced, _ = tf.clip_by_global_norm(reduced, clip_norm * scale)
    # A non-finite loss stops train.py's run (on the host, after this step); its
    # gradients are dropped so that the weights in memory stay those of the last good
    # step.
    finite = tf.math.is_finite(global_loss)
    shares = [tf.where(finite, g, tf.zeros_like(g)) / replicas for g in reduced]
    optimizer.apply(shares, [variables[i] for i in present])
    return dict(losses, regularisation_loss=regularisation)
