"""Trains an R-FCN or STMN detector (stage 1 or 2 of the paper's recipe).

    python train.py --config configs/synthetic_tiny_rfcn.yaml --model-dir runs/rfcn
    python train.py --config configs/synthetic_tiny_stmn.yaml --model-dir runs/stmn \
        --init-from runs/rfcn
    python train.py ... --strategy mirrored --cpu-replicas 2   # 2 replicas on a CPU

Resumes from the latest checkpoint in --model-dir, at the input position saved with it
(with train.deterministic, as if never interrupted). The loop is stmn_tf/training/trainer.py.
"""

import argparse
import os
import sys

from stmn_tf import cli
from stmn_tf.training.distribution import STRATEGIES


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="YAML experiment (configs/*.yaml)")
    parser.add_argument("--model-dir", required=True,
                        help="checkpoints, config.yaml, summaries; resumed from when it has a checkpoint")
    parser.add_argument("--params-override", default="",
                        help='comma-separated overrides, e.g. "train.steps=100,train_data.global_batch_size=8"')
    parser.add_argument("--steps", type=int, default=None, help="total training steps (default: train.steps)")
    parser.add_argument("--init-from", default=None,
                        help="stage 2: a stage-1 R-FCN model directory or checkpoint prefix")
    parser.add_argument("--strategy", default="auto", choices=STRATEGIES,
                        help="auto: MultiWorkerMirrored when TF_CONFIG names a cluster, else "
                             "Mirrored over the local GPUs (or --cpu-replicas), else one device")
    parser.add_argument("--cpu-replicas", type=int, default=0,
                        help="split the CPU into N logical devices (distribution without GPUs)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Before anything else initialises TensorFlow's devices.
    from stmn_tf.training import distribution

    distribution.configure_cpu_replicas(args.cpu_replicas)

    config = cli.load_config("train.py", args.config, args.params_override)
    from stmn_tf.data import synthetic
    from stmn_tf.training import checkpointing
    from stmn_tf.training import trainer

    config = synthetic.resolve_synthetic_data(config)
    strategy = distribution.select_strategy(args.strategy)
    try:
        trainer.train(config, args.model_dir, steps=args.steps, strategy=strategy,
                      init_from=args.init_from, progress=not args.no_progress)
    except (trainer.NonFiniteLossError, checkpointing.CheckpointMismatchError) as e:
        sys.exit(f"train.py: {e}")


if __name__ == "__main__":
    main()
