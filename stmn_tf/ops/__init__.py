"""Pure functions and custom-op wrappers.

Names are imported on first use, so that the NumPy-only modules here (seq_nms,
tube_linking) do not pull in TensorFlow. The functions live in modules of other names
(match_trans_op, bn_star_op), so that importing a module never hides the function of
the same name on this package.
"""

import importlib

_FUNCTIONS = {
    "bn_star": "stmn_tf.ops.bn_star_op",
    "custom_op_available": "stmn_tf.ops.match_trans_op",
    "load_library": "stmn_tf.ops.match_trans_op",
    "match_trans": "stmn_tf.ops.match_trans_op",
    "match_trans_coefficients": "stmn_tf.ops.match_trans_op",
    "ps_roi_average_pool": "stmn_tf.ops.ps_roi_pooling",
}
_SUBMODULES = ("anchors", "box_ops", "nms", "ps_roi_pooling", "targets", "seq_nms", "tube_linking")

__all__ = sorted(_FUNCTIONS) + list(_SUBMODULES)


def __getattr__(name):
    if name in _FUNCTIONS:
        value = getattr(importlib.import_module(_FUNCTIONS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value
