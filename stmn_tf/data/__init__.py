"""SequenceExample schema, converters, synthetic videos and the tf.data pipeline.

    from stmn_tf import data
    patterns = data.ensure_synthetic_dataset("/tmp/stmn_synthetic")
    config = data.synthetic_data_config("/tmp/stmn_synthetic", "train")
    dataset = data.build_dataset(config)   # or strategy.distribute_datasets_from_function(
                                           #        data.make_dataset_fn(config))

The names below are loaded on first use, so that converter worker processes, which
import `stmn_tf.data.convert_*`, do not pay for importing TensorFlow.
"""

import importlib

_EXPORTS = {
    "DataConfig": "config",
    "ImageSizeConfig": "config",
    "SyntheticConfig": "config",
    "synthetic_data_config": "config",
    "build_dataset": "pipeline",
    "make_dataset_fn": "pipeline",
    "ensure_synthetic_dataset": "synthetic",
    "VID_CLASSES": "vid_classes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stmn_tf.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"stmn_tf.data.{_EXPORTS[name]}"), name)
