"""Initialising STMN from a trained static R-FCN (paper Sec. 3.2).

Every layer the two share (backbone, features, RPN, R-FCN head) is copied; the
R-FCN's 3x3 conv goes into the memory's W, W_z, W_r (output channels [0, F) forward,
[F, 2F) backward, `weight_transfer.transfer_conv_to_memory`); the U convolutions stay
fresh. The ablations of Table 2 copy less (`stmn_tf.variants.VARIANTS`): ConvGRU-FreshFC leaves
the memory and the layers after it (the R-FCN head) freshly initialised.
"""

import numpy as np

from stmn_tf.variants import VARIANTS
from stmn_tf.models.weight_transfer import transfer_conv_to_memory

def _copy_layer(source, target, report):
    if len(source.weights) != len(target.weights):
        raise ValueError(
            f"{source.name} has {len(source.weights)} weights, {target.name} {len(target.weights)}"
        )
    for s, t in zip(source.weights, target.weights):
        if tuple(s.shape) != tuple(t.shape):
            raise ValueError(f"Shape mismatch: {s.path} {s.shape} vs {t.path} {t.shape}")
        t.assign(s)
        report["copied"].append({"source": s.path, "target": t.path})


def _transfer_forward_memory(conv, cell, fresh, report):
    """Forward-only memory of 2F channels: the whole conv into its W, W_z, W_r."""
    kernel, bias = np.asarray(conv.kernel.numpy()), np.asarray(conv.bias.numpy())
    for name in ("conv_w", "conv_z_w", "conv_r_w"):
        target = getattr(cell, name)
        if tuple(target.kernel.shape) != kernel.shape:
            raise ValueError(f"Shape mismatch: {conv.kernel.path} {kernel.shape} vs {target.kernel.path}")
        if fresh:
            report["fresh"] += [target.kernel.path, target.bias.path]
            continue
        target.kernel.assign(kernel)
        target.bias.assign(bias)
        report["copied"] += [
            {"source": conv.kernel.path, "target": target.kernel.path},
            {"source": conv.bias.path, "target": target.bias.path},
        ]
    report["fresh"] += [getattr(cell, n).kernel.path for n in ("conv_u", "conv_z_u", "conv_r_u")]


def transfer_rfcn_to_stmn(rfcn, stmn, variant="stmn"):
    """Copies a trained `RFCN` into an `STMN` of the same backbone and head shapes.

    Args:
      rfcn: a built `stmn_tf.models.RFCN`.
      stmn: a built `stmn_tf.models.STMN` whose `memory_channels` equals the
        R-FCN's `head_channels`.
      variant: a key of `stmn_tf.variants.VARIANTS`. Defaults to `"stmn"`.

    Returns:
      dict: `copied`, a list of `{"source": path, "target": path}` for every
      variable copied (or slice, for the memory); `fresh`, the paths of the
      variables left as initialised.

    Raises:
      ValueError: on an unknown variant or any shape mismatch.
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r}; one of {sorted(VARIANTS)}")
    rules = VARIANTS[variant]
    report = {"copied": [], "fresh": []}
    _copy_layer(rfcn.backbone, stmn.backbone, report)
    _copy_layer(rfcn.features, stmn.features, report)
    _copy_layer(rfcn.rpn_head, stmn.rpn_head, report)
    if rules.transfer_head:
        _copy_layer(rfcn.rfcn_head, stmn.rfcn_head, report)
    else:
        report["fresh"] += [w.path for w in stmn.rfcn_head.weights]
    if stmn.memory_direction == "bidirectional":
        memory = transfer_conv_to_memory(rfcn.head_conv, stmn.memory_layer, fresh=not rules.transfer_memory)
        report["copied"] += memory["copied"]
        report["fresh"] += memory["fresh"]
    else:
        _transfer_forward_memory(rfcn.head_conv, stmn.memory_layer.cell, not rules.transfer_memory, report)
    return report


def transfer_rfcn_file_to_stmn(path, stmn, variant="stmn"):
    """`transfer_rfcn_to_stmn` from a saved static detector.

    Args:
      path: a `.keras` file of an `RFCN`, or a `.weights.h5` of an `RFCN` built with
        the STMN's parts (and a `head_conv` of `stmn.memory_channels`).
      stmn: a built `STMN`.
      variant: a key of `stmn_tf.variants.VARIANTS`.

    Returns:
      the `transfer_rfcn_to_stmn` report.
    """
    import keras

    from stmn_tf.models.builders import build_head_conv
    from stmn_tf.models.config import HeadConfig
    from stmn_tf.models.rfcn import RFCN

    if path.endswith(".keras"):
        rfcn = keras.saving.load_model(path)
    else:
        # The R-FCN that STMN was made from: copies of STMN's parts, and the 3x3 conv
        # that its memory replaces.
        parts = {
            name: keras.saving.deserialize_keras_object(
                keras.saving.serialize_keras_object(getattr(stmn, name)))
            for name in RFCN.PART_NAMES
        }
        rfcn = RFCN(head_conv=build_head_conv(HeadConfig(channels=stmn.memory_channels)), **parts)
        rfcn.load_weights(path)
    return transfer_rfcn_to_stmn(rfcn, stmn, variant)
