"""The training loop of train.py: one custom loop for every tf.distribute strategy.

Keras 3's `model.fit` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585),
so the loop is written out, the same for one device, MirroredStrategy and
MultiWorkerMirroredStrategy:

    batch  = inputs.next()                 # per-replica batches (inputs.ReplicaInputs)
    losses = train_step(batch)             # tf.function: strategy.run(replica_train_step),
                                           # then the mean of the replicas' losses
    host: non-finite check, plateau, progress bar, summaries, checkpoints

`replica_train_step` (`stmn_tf.training.step`) is the one training step, the one
`model.fit` runs too: losses, weight decay, loss scaling, all-reduced and clipped
gradients, the finiteness guard.
"""

import copy
import logging
import math
import os
import shutil
import time

import keras
import tensorflow as tf

from stmn_tf.data import pipeline
from stmn_tf.training import checkpointing
from stmn_tf.training import distribution
from stmn_tf.training import inputs as inputs_lib
from stmn_tf.training import optimization
from stmn_tf.training import summaries
from stmn_tf.training.step import replica_train_step

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step."""


class TrainingState:
    """The model, optimizer, step and schedule of one run, built in `strategy.scope()`.

    Attributes:
        model, optimizer (SGD, or a LossScaleOptimizer around it), schedule
        (`LearningRate`), plateau (`PlateauController` or None), step (int64 variable:
        training steps done), checkpoint (`tf.train.Checkpoint`).
    """

    def __init__(self, config, strategy):
        from stmn_tf.models.builders import build_model

        optimizer_config = config.train.optimizer
        with strategy.scope():
            self.model = build_model(config.model)
            self.plateau = None
            if optimizer_config.schedule == "plateau":
                self.plateau = optimization.PlateauController(
                    optimizer_config.plateau_patience, optimizer_config.decay_factor)
            self.optimizer, self.schedule = optimization.build_optimizer(
                optimizer_config, self.plateau)
            if config.train.mixed_precision:
                self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
            # Built now, so that a restore finds the slot variables it fills.
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self.checkpoint = checkpointing.make_checkpoint(
            self.model, self.optimizer, self.step, self.plateau)

    @property
    def learning_rate(self):
        return float(self.schedule(self.optimizer.iterations))


def make_train_step(state, strategy, weight_decay=0.0, clip_norm=0.0, seed=0):
    """The compiled step: `train_step(distributed_batch) -> {loss name: global mean}`.

    Runs `stmn_tf.training.step.replica_train_step` (the step `model.fit` runs too) on
    every replica, averages the replicas' losses and counts the step.

    The random sampling of anchors and RoIs draws from `sampling_seed` = (seed, step *
    replicas + replica): a function of the step, not of a random state that a resumed
    process would start afresh.
    """
    replicas = strategy.num_replicas_in_sync

    def replica_step(batch, step):
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
        sampling_seed = tf.stack([tf.constant(seed, tf.int64), step * replicas + replica])
        return replica_train_step(state.model, state.optimizer,
                                  dict(batch, sampling_seed=sampling_seed), weight_decay,
                                  clip_norm)

    @tf.function
    def train_step(batch):
        step = tf.identity(state.step)
        per_replica = strategy.run(replica_step, args=(batch, step))
        losses = {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                  for name, value in per_replica.items()}
        state.step.assign_add(1)
        return losses

    return train_step


def _first_local_batch(strategy, batch):
    """This task's first replica's batch, as plain tensors (for image summaries)."""
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], batch)


def _clips_in_batch(strategy, batch):
    """Clips in the global batch (per-replica batch x replicas)."""
    images = strategy.experimental_local_results(batch["images"])[0]
    return int(images.shape[0] or tf.shape(images)[0]) * strategy.num_replicas_in_sync


def _restore_or_initialize(state, config, model_dir, init_from, echo):
    """Resumes from `model_dir`'s latest checkpoint, else initialises from `init_from`
    (stage 2) when given. Returns the prefix resumed from, or None."""
    # Every worker restores from the chief's directory (the shared model_dir).
    resumed_from = checkpointing.restore_latest(state.checkpoint, model_dir)
    if resumed_from:
        echo(f"Resuming from {resumed_from} at step {int(state.step.numpy())}")
    elif init_from:
        report = checkpointing.initialize_from(config, state.model, init_from)
        echo(f"Initialised from {report['checkpoint']} ({report['variant']}): "
             f"{len(report['copied'])} variables copied, {len(report['fresh'])} left fresh")
        for path in report["fresh"]:
            echo(f"  fresh: {path}")
    return resumed_from


class _Reporter:
    """What the loop reports after each step: the progress bar, the plateau's
    learning-rate drops, TensorBoard scalars and images, train_log.jsonl."""

    def __init__(self, config, state, strategy, log_dir, start, total_steps, chief, progress,
                 echo):
        from tqdm import tqdm

        self.config, self.state, self.strategy = config, state, strategy
        self.chief, self.echo, self.total_steps = chief, echo, total_steps
        self.log = summaries.TrainingLog(log_dir, enabled=chief)
        self.bar = tqdm(total=total_steps, initial=start, disable=not (chief and progress),
                        desc="train", unit="step", dynamic_ncols=True)
        self.window_start = time.time()
        self.window_steps = self.window_examples = 0

    def step(self, current, losses, batch, clips):
        state, train_config = self.state, self.config.train
        self.window_examples += clips
        self.window_steps += 1
        if state.plateau is not None and state.plateau.update(losses["total_loss"]):
            self.echo(f"step {current}: loss on a plateau, learning rate -> "
                      f"{state.learning_rate:.3g}")
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{losses['total_loss']:.4f}", lr=f"{state.learning_rate:.2g}")
        last = current == self.total_steps
        if current % train_config.summary_every == 0 or last:
            elapsed = max(time.time() - self.window_start, 1e-9)
            self.log.scalars(current, {**losses, "learning_rate": state.learning_rate,
                                       "examples_per_second": self.window_examples / elapsed,
                                       "steps_per_second": self.window_steps / elapsed})
            self.window_start, self.window_steps, self.window_examples = time.time(), 0, 0
        if self.chief and train_config.image_summary_every > 0 and (
                current % train_config.image_summary_every == 0 or last):
            clip = _first_local_batch(self.strategy, batch)
            self.log.images(current, "detections", summaries.detection_images(state.model, clip))

    def close(self):
        self.bar.close()
        self.log.flush()


def make_deterministic(config):
    """`train.deterministic`: seeds Python, NumPy and TensorFlow with `train.seed`,
    turns on TensorFlow's op determinism (process-wide) and the data pipeline's
    ordered, seeded mode. Returns the data config to read (a copy)."""
    data_config = copy.deepcopy(config.train_data)
    if config.train.deterministic:
        keras.utils.set_random_seed(int(config.train.seed))
        tf.config.experimental.enable_op_determinism()
        data_config.deterministic = True
    return data_config


def _input_is_saved(data_config, multi_worker):
    """Whether the input position goes into the checkpoints: not in a multi-worker run,
    whose non-chief workers' checkpoints are discarded, nor with the Python reader
    (`checked_reader`, `skip_corrupt`), whose generator has no state to save."""
    return not (multi_worker or pipeline.uses_python_reader(data_config))


def _resume_input(state, inputs, resumed_from, echo):
    """Puts the input iterators into the checkpoint and, after a resume, restores their
    position. Returns True when the run reads on from the checkpointed position."""
    restored = bool(resumed_from) and checkpointing.restore_input(inputs.trackable, resumed_from)
    if resumed_from and not restored:
        echo(f"{resumed_from} holds no input position (an older checkpoint): the clips "
             "are drawn with another seed")
    state.checkpoint.input = inputs.trackable
    return restored


def _check_finite(losses, current, manager):
    if not math.isfinite(losses["total_loss"]):
        raise NonFiniteLossError(
            f"non-finite loss at step {current}: "
            + ", ".join(f"{k}={v}" for k, v in losses.items())
            + f"; the last good checkpoint is {manager.latest_checkpoint or 'none'} "
            "(the bad state was not saved)")


def _save_on_interrupt(manager, state, losses, echo):
    """Keeps the state of a run stopped between steps (Ctrl-C), when it is good.

    One device or one machine only: in a multi-worker run the other workers would wait
    for this one's save. Returns the prefix saved, or None.
    """
    if distribution.is_multi_worker_cluster() or not losses or not math.isfinite(
            losses.get("total_loss", math.nan)):
        return None
    prefix = manager.save(checkpoint_number=int(state.step.numpy()))
    echo(f"\nInterrupted: saved {prefix}")
    return prefix


def train(config, model_dir, steps=None, strategy=None, init_from=None, progress=True,
          echo=print):
    """Trains `config` in `model_dir` up to `steps` total steps (default train.steps).

    Resumes from the latest checkpoint of `model_dir` if there is one, reading on
    from the input position saved with it; otherwise initialises from `init_from` (or
    `config.train.init_from`) when given (stage 2). With `train.deterministic` a run
    killed and resumed ends with the weights of the same run uninterrupted.

    Args:
        config: ExperimentConfig (input paths resolved, see
            `stmn_tf.data.synthetic.resolve_synthetic_data`).
        model_dir: str. Checkpoints, config.yaml, summaries, train_log.jsonl.
        steps: int. Total steps of the run, counting the resumed ones.
        strategy: a tf.distribute.Strategy (default: distribution.select_strategy("auto")).
        init_from: str. A stage-1 model directory or checkpoint prefix.
        progress: bool. Show the progress bar.
        echo: callable for the messages of the run (resume, transfer, summary).

    Returns:
        dict: `step` (the last), `losses` (the last step's), `checkpoint` (the latest
        prefix), `resumed_from`, `steps_per_second`, `examples_per_second`.

    Raises:
        NonFiniteLossError: the loss became NaN or infinite (no checkpoint is written
            of that state; the latest one in `model_dir` is the last good one).
    """
    from stmn_tf.configs import save_config

    strategy = strategy or distribution.select_strategy("auto")
    chief = distribution.is_chief(strategy)
    task = distribution.task_name(strategy)
    # Every task prints its final line (tagged in a multi-worker run, so that the
    # workers' losses can be compared); only the chief prints the rest.
    final_echo = (lambda text, say=echo: say(f"[{task}] {text}")) if task else echo
    echo = echo if chief else (lambda *args, **kwargs: None)
    total_steps = int(steps if steps is not None else config.train.steps)
    write_dir = distribution.worker_model_dir(model_dir, strategy)
    os.makedirs(write_dir, exist_ok=True)
    if chief:
        save_config(config, os.path.join(model_dir, "config.yaml"))

    data_config = make_deterministic(config)
    previous_policy = keras.config.dtype_policy()
    if config.train.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16")
    try:
        state = TrainingState(config, strategy)
    finally:
        keras.config.set_dtype_policy(previous_policy)

    manager = checkpointing.make_manager(state.checkpoint, write_dir, config.train.keep_checkpoints)
    resumed_from = _restore_or_initialize(
        state, config, model_dir, init_from or config.train.init_from, echo)
    start = int(state.step.numpy())
    result = {"step": start, "losses": {}, "checkpoint": resumed_from,
              "resumed_from": resumed_from, "steps_per_second": 0.0, "examples_per_second": 0.0}
    if start >= total_steps:
        echo(f"Nothing to do: {model_dir} is at step {start} >= --steps {total_steps}")
        return result

    input_saved = _input_is_saved(data_config, distribution.is_multi_worker_cluster())
    if resumed_from and not (input_saved and checkpointing.holds_input(resumed_from)):
        # No input position to read on from: draw other clips than the first run's
        # first ones.
        data_config.seed = int(data_config.seed) + start
    inputs = inputs_lib.ReplicaInputs(strategy, data_config)
    if input_saved:
        _resume_input(state, inputs, resumed_from, echo)
    elif resumed_from:
        echo("The input position is not checkpointed (multi-worker run or Python reader): "
             "the clips are drawn with another seed")
    train_step = make_train_step(
        state, strategy, weight_decay=config.train.optimizer.weight_decay,
        clip_norm=config.train.optimizer.clip_norm, seed=config.train.seed)
    reporter = _Reporter(config, state, strategy, model_dir if chief else write_dir, start,
                         total_steps, chief, progress, echo)
    run_start = time.time()
    examples = 0
    losses = {}
    current = start
    try:
        while current < total_steps:
            batch = inputs.next()
            values = train_step(batch)
            current = int(state.step.numpy())
            losses = {name: float(value) for name, value in values.items()}
            clips = _clips_in_batch(strategy, batch)
            examples += clips
            _check_finite(losses, current, manager)
            reporter.step(current, losses, batch, clips)
            if current % config.train.checkpoint_every == 0 or current == total_steps:
                result["checkpoint"] = manager.save(checkpoint_number=current)
    except KeyboardInterrupt:
        # Between steps the state is consistent: keep it.
        result["checkpoint"] = _save_on_interrupt(manager, state, losses, echo) or result["checkpoint"]
        raise
    finally:
        reporter.close()
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)

    elapsed = max(time.time() - run_start, 1e-9)
    done = current - start
    result.update(step=current, losses=losses, steps_per_second=done / elapsed,
                  examples_per_second=examples / elapsed)
    if not chief:
        result["checkpoint"] = f"(the chief's, in {model_dir})"
    final_echo(f"Trained steps {start}..{current} in {elapsed:.1f} s ({done / elapsed:.2f} steps/s, "
         f"{examples / elapsed:.1f} clips/s on {strategy.num_replicas_in_sync} replica(s)); "
         f"loss {losses.get('total_loss', math.nan):.4f} ("
         + ", ".join(f"{k} {v:.4f}" for k, v in losses.items() if k != "total_loss")
         + f"); checkpoint {result['checkpoint']}")
    return result
