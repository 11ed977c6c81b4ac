"""Checkpoints of the training state, resume, and the stage-2 initialisation.

Layout of a model directory (train.py's `--model-dir`):

    config.yaml            the resolved experiment
    checkpoint             CheckpointManager's state file: the latest and kept prefixes
    ckpt-<step>.index      one checkpoint per save, named by the training step
    ckpt-<step>.data-*     tf.train.Checkpoint(model, optimizer, step[, plateau])
    train/                 TensorBoard event files
    train_log.jsonl        one JSON line per logged step

A save is kill-safe because of the order in which TensorFlow writes it: the data and
index files are written under temporary names and renamed into place (SaveV2 then
MergeV2Checkpoints), and only then is the `checkpoint` state file replaced (written
to a temporary file and renamed). A kill before that last rename leaves the state file
pointing at the previous, complete checkpoint; the orphaned files of the unfinished
save are overwritten by the next save of the same step.
"""

import copy

import tensorflow as tf

CHECKPOINT_NAME = "ckpt"


def make_checkpoint(model, optimizer, step, plateau=None):
    """The trackable root of a training checkpoint (`model`, `optimizer`, `step`)."""
    parts = dict(model=model, optimizer=optimizer, step=step)
    if plateau is not None:
        parts["plateau"] = plateau
    return tf.train.Checkpoint(**parts)


def make_manager(checkpoint, directory, keep):
    return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=keep,
                                      checkpoint_name=CHECKPOINT_NAME)


def restore_latest(checkpoint, directory):
    """Restores the latest checkpoint of `directory`; returns its prefix or None.

    Every object of the training state must find its values (a checkpoint of another
    model fails here, naming what is missing, rather than training from random weights).
    """
    latest = tf.train.latest_checkpoint(directory)
    if latest is None:
        return None
    checkpoint.restore(latest).assert_existing_objects_matched()
    return latest


def initialize_from(config, model, path):
    """Stage 2 of the paper: initialises `model` from a stage-1 checkpoint.

    For an STMN `model`, the R-FCN of the same model config (type "rfcn") is built,
    restored from `path` (a model directory or a checkpoint prefix) and copied into
    the STMN by `transfer_rfcn_to_stmn` with the config's memory variant (which says
    what the Table 2 ablations copy). For an R-FCN `model` the weights are restored
    directly (fine-tuning).

    Returns:
        dict: `checkpoint` (the prefix read), `copied` and `fresh` (variable paths; the
        transfer report), `variant`.
    """
    from stmn_tf.configs import find_checkpoint
    from stmn_tf.models.builders import build_model
    from stmn_tf.models.detector_transfer import transfer_rfcn_to_stmn

    prefix = find_checkpoint(path)
    if config.model.type == "rfcn":
        tf.train.Checkpoint(model=model).restore(prefix).expect_partial() \
            .assert_existing_objects_matched()
        return {"checkpoint": prefix, "copied": [v.path for v in model.weights], "fresh": [],
                "variant": "rfcn"}
    rfcn_config = copy.deepcopy(config.model)
    rfcn_config.type = "rfcn"
    # Called outside the strategy's scope: the R-FCN is a plain source of values, and
    # assigning them to the STMN's mirrored variables updates every replica.
    rfcn = build_model(rfcn_config)
    status = tf.train.Checkpoint(model=rfcn).restore(prefix).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError as e:
        raise ValueError(
            f"--init-from {path}: {prefix} is not a checkpoint of the R-FCN of this model "
            f"config (stage 1 must use the same backbone, features and head): {e}") from e
    report = transfer_rfcn_to_stmn(rfcn, model, variant=config.model.memory.variant)
    report.update(checkpoint=prefix, variant=config.model.memory.variant)
    return report

