"""Training: the distributed loop of train.py and its pieces.

    distribution.py   strategy selection, logical CPU replicas, chief / worker roles
    optimization.py   SGD with momentum, warm-up, step or plateau schedule
    inputs.py         one checkpointable tf.data iterator per replica (the input position)
    checkpointing.py  model + optimizer + step + input checkpoints, resume, stage-2 init
    summaries.py      TensorBoard scalars and detection images, train_log.jsonl
    trainer.py        the custom loop (`train`) shared by every strategy
"""

from stmn_tf.training.trainer import NonFiniteLossError
from stmn_tf.training.trainer import train

__all__ = ["NonFiniteLossError", "train"]
