"""Initialising the memory from the static detector (paper Sec. 3.2).

STMN replaces the static R-FCN's 3x3 conv (`2 * filters` outputs) by a forward and a
backward memory of `filters` channels each. The paper's key point is to initialise W,
W_z and W_r of Eqs. 1-3 from that conv ("a way to initialise the memory with the
pre-trained static feature maps"): its output channels [0, filters) go into the forward
cell, [filters, 2 * filters) into the backward cell, kernel and bias; the U
convolutions keep their fresh initialisation. The "fresh" variant (the ConvGRU-FreshFC
ablation) copies nothing and leaves all six convolutions as initialised.
"""

import numpy as np

from stmn_tf.layers.bidirectional_stmm import BidirectionalSTMM

_INPUT_CONVS = ("conv_w", "conv_z_w", "conv_r_w")
_MEMORY_CONVS = ("conv_u", "conv_z_u", "conv_r_u")


def _as_pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


def transfer_conv_to_memory(conv, memory_layer, fresh=False):
    """Copies a pretrained conv's two output halves into a `BidirectionalSTMM`.

    Args:
      conv: a built `keras.layers.Conv2D` with `2 * filters` outputs, a bias, stride 1,
        no dilation, and the memory layer's kernel size and input channels (the static
        R-FCN's 3x3 conv).
      memory_layer: a `stmn_tf.layers.BidirectionalSTMM` (cell `"stmm"` or
        `"convgru"`). It is built here from the conv's input channels if needed.
      fresh: bool. When True nothing is copied (the "fresh" ablation); the shapes are
        still checked. Defaults to False.

    Returns:
      A dict: `"copied"`, a list of `{"source": "<conv>/kernel[..., a:b]", "target":
      <variable path>}` (empty when `fresh`), and `"fresh"`, the paths of the
      variables left as initialised.

    Raises:
      TypeError: if `memory_layer` is not a `BidirectionalSTMM`.
      ValueError: if the conv is not built or its shape does not fit the memory.
    """
    if not isinstance(memory_layer, BidirectionalSTMM):
        raise TypeError(
            "transfer_conv_to_memory: memory_layer must be a BidirectionalSTMM, got "
            f"{type(memory_layer).__name__}"
        )
    if not conv.built:
        raise ValueError(f"transfer_conv_to_memory: the conv {conv.name} is not built")
    if not conv.use_bias:
        raise ValueError(
            f"transfer_conv_to_memory: the conv {conv.name} has no bias; the STMM's W "
            "convolutions have one"
        )
    if _as_pair(conv.strides) != (1, 1) or _as_pair(conv.dilation_rate) != (1, 1):
        raise ValueError(
            f"transfer_conv_to_memory: the conv {conv.name} must have stride 1 and no "
            f"dilation, got strides={conv.strides}, dilation_rate={conv.dilation_rate}"
        )
    kernel = np.asarray(conv.kernel.numpy())  # [kh, kw, C, 2F]
    bias = np.asarray(conv.bias.numpy())  # [2F]
    filters = memory_layer.filters
    kh, kw, channels, outputs = kernel.shape
    if not memory_layer.built:
        memory_layer.build((None, None, None, None, channels))
    expected = memory_layer.forward_layer.cell.conv_w.kernel.shape  # [kh, kw, C, F]
    if (kh, kw, channels, outputs) != (expected[0], expected[1], expected[2], 2 * filters):
        raise ValueError(
            f"transfer_conv_to_memory: the conv's kernel has shape {kernel.shape}, the "
            f"memory needs [{expected[0]}, {expected[1]}, {expected[2]}, {2 * filters}] "
            f"(kernel size, input channels, 2 * filters={2 * filters})"
        )

    report = {"copied": [], "fresh": []}
    halves = (
        (memory_layer.forward_layer.cell, 0),
        (memory_layer.backward_layer.cell, filters),
    )
    for cell, start in halves:
        stop = start + filters
        for name in _INPUT_CONVS:
            target = getattr(cell, name)
            if fresh:
                report["fresh"] += [target.kernel.path, target.bias.path]
                continue
            target.kernel.assign(kernel[..., start:stop])
            target.bias.assign(bias[start:stop])
            report["copied"] += [
                {
                    "source": f"{conv.kernel.path}[..., {start}:{stop}]",
                    "target": target.kernel.path,
                },
                {
                    "source": f"{conv.bias.path}[{start}:{stop}]",
                    "target": target.bias.path,
                },
            ]
        # The U convolutions read the memory, which the static detector does not have.
        report["fresh"] += [getattr(cell, name).kernel.path for name in _MEMORY_CONVS]
        if getattr(cell, "offset_prior_weight", None) is not None:  # MatchTrans' own
            report["fresh"].append(cell.offset_prior_weight.path)
    return report
