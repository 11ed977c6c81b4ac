"""Checkpoints of the training state, resume, and the stage-2 initialisation.

Layout of a model directory (train.py's `--model-dir`):

    config.yaml            the resolved experiment
    checkpoint             CheckpointManager's state file: the latest and kept prefixes
    ckpt-<step>.index      one checkpoint per save, named by the training step
    ckpt-<step>.data-*     tf.train.Checkpoint(model, optimizer, step[, plateau][, input]),
                           `input` the replicas' tf.data iterators (the input position)
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


def _saved_replicas(prefix):
    return sorted({name.split("/")[1] for name, _ in tf.train.list_variables(prefix)
                   if name.startswith("input/")})


def holds_input(prefix):
    """Whether checkpoint `prefix` holds an input position (`restore_input`)."""
    return bool(_saved_replicas(prefix))


def restore_input(trackable, prefix):
    """Restores the input iterators of `trackable` (`training.inputs.ReplicaInputs`'s)
    from checkpoint `prefix`. Returns False, restoring nothing, when `prefix` holds no
    input position (a checkpoint written before it was saved).

    Raises:
        CheckpointMismatchError: the checkpoint's iterators are not this run's (another
            replica count: each replica's pipeline reads its own shard).
    """
    saved = _saved_replicas(prefix)
    if not saved:
        return False
    expected = sorted(name for name in dir(trackable) if name.startswith("replica_"))
    if saved != expected:
        raise CheckpointMismatchError(
            f"{prefix}: its input position is of replicas {saved}, this run has {expected}; "
            "resume with the replica count of the run that wrote it")
    # The iterators hang below the root's `input` dependency in the saved graph.
    tf.train.Checkpoint(input=trackable).read(prefix).expect_partial() \
        .assert_existing_objects_matched()
    return True


class CheckpointMismatchError(ValueError):
    """A checkpoint is not one of the model it is restored into (the message says why)."""


def find_checkpoint(path):
    """A checkpoint prefix from a model directory (its latest) or a prefix itself."""
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {path}")
        return latest
    if tf.io.gfile.exists(path + ".index"):
        return path
    raise FileNotFoundError(f"{path} is neither a model directory nor a checkpoint prefix")


def restore(model, path, what=None):
    """Restores every variable of `model` from a model directory or checkpoint prefix.

    The one restore of a model's weights (detect.py, evaluate.py, export.py, the
    stage-2 initialisation). Checkpoints are train.py's, `tf.train.Checkpoint(model=
    model, optimizer, step)`; the optimizer and step in them are ignored. Every
    variable of the model must come from the checkpoint: a model of another config
    fails here, not with random weights later.

    Args:
        model: a detector (built here with a 1-frame call when it is not yet: a
            restore before its variables exist would be deferred and silently leave
            them fresh).
        path: str, a model directory (its latest checkpoint) or a checkpoint prefix.
        what: optional str naming the model in the error (e.g. "the 'stmn' model of
            this config").

    Returns:
        str, the prefix read.

    Raises:
        FileNotFoundError: no checkpoint at `path`.
        CheckpointMismatchError: a variable of the model has no value in the
            checkpoint, or a shape differs.
    """
    if not model.built or not model.weights:
        model({"images": tf.zeros([1, 1, 32, 32, 3])})
    prefix = find_checkpoint(path)
    try:
        tf.train.Checkpoint(model=model).restore(prefix).expect_partial() \
            .assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise CheckpointMismatchError(
            f"{prefix} does not match {what or 'the model'}: {e}") from e
    return prefix


def restore_model(config, path, model=None):
    """Builds `config.model` (unless `model` is given) and `restore`s it from `path`.

    Args:
        config: ExperimentConfig (or its ModelConfig).
        path: a model directory or a checkpoint prefix.
        model: optional detector to restore into.

    Returns:
        `(model, prefix)`.
    """
    from stmn_tf.models.builders import build_model

    model_config = getattr(config, "model", config)
    model = model if model is not None else build_model(model_config)
    prefix = restore(model, path, f"the {model_config.type!r} model of this config")
    return model, prefix


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
    from stmn_tf.models.builders import build_model
    from stmn_tf.models.detector_transfer import transfer_rfcn_to_stmn

    if not model.has_memory:
        prefix = restore(model, path)
        return {"checkpoint": prefix, "copied": [v.path for v in model.weights], "fresh": [],
                "variant": "rfcn"}
    rfcn_config = copy.deepcopy(config.model)
    rfcn_config.type = "rfcn"
    # Called outside the strategy's scope: the R-FCN is a plain source of values, and
    # assigning them to the STMN's mirrored variables updates every replica.
    rfcn = build_model(rfcn_config)
    try:
        prefix = restore(rfcn, path)
    except CheckpointMismatchError as e:
        raise CheckpointMismatchError(
            f"--init-from {path}: not a checkpoint of the R-FCN of this model config "
            f"(stage 1 must use the same backbone, features and head): {e}") from e
    report = transfer_rfcn_to_stmn(rfcn, model, variant=config.model.memory.variant)
    report.update(checkpoint=prefix, variant=config.model.memory.variant)
    return report
