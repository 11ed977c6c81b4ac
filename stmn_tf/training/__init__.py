"""Training: the distributed loop of train.py and its pieces.

    distribution.py   strategy selection, logical CPU replicas, chief / worker roles
    optimization.py   SGD with momentum, warm-up, step or plateau schedule
    inputs.py         one checkpointable tf.data iterator per replica (the input position)
    checkpointing.py  model + optimizer + step + input checkpoints, resume, stage-2 init
    summaries.py      TensorBoard scalars and detection images, train_log.jsonl
    trainer.py        the custom loop (`train`) shared by every strategy

`train` and `NonFiniteLossError` load on first use, so that importing one piece (the
learning-rate schedule, which `import stmn_tf` registers with Keras) does not import
the whole loop.
"""

import importlib

_EXPORTS = {"NonFiniteLossError": "trainer", "train": "trainer"}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'stmn_tf.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"stmn_tf.training.{_EXPORTS[name]}"), name)
