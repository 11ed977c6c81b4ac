"""The training loop in-process on one device: checkpoints, resume, logs, stage 2, NaN.

The distributed runs (MirroredStrategy, two workers, a SIGKILL) are in
test_distributed.py, in fresh processes.
"""

import glob
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf import configs
from stmn_tf.training import checkpointing
from stmn_tf.training import distribution
from stmn_tf.training import trainer
from tests.training.helpers import tiny_config

pytestmark = pytest.mark.slow

NO_IMAGES = dict(train__image_summary_every=0)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("training")


@pytest.fixture(scope="module")
def strategy():
    return distribution.select_strategy("one_device")


@pytest.fixture(scope="module")
def stage1(workdir, strategy):
    """A tiny R-FCN trained for 30 steps (stage 1), then resumed to 32."""
    config = tiny_config("synthetic_tiny_rfcn", str(workdir / "data"),
                         train__optimizer__learning_rate=0.04, train__optimizer__warmup_steps=0,
                         train__checkpoint_every=10, train__summary_every=2,
                         train__image_summary_every=30, train__keep_checkpoints=2)
    model_dir = str(workdir / "rfcn")
    messages = []
    first = trainer.train(config, model_dir, steps=30, strategy=strategy, progress=False,
                          echo=messages.append)
    second = trainer.train(config, model_dir, steps=32, strategy=strategy, progress=False,
                           echo=messages.append)
    return dict(config=config, model_dir=model_dir, first=first, second=second, messages=messages)


def _log(model_dir):
    with open(os.path.join(model_dir, "train_log.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_checkpoints_logs_and_resume(stage1):
    model_dir = stage1["model_dir"]
    # keep_checkpoints = 2: the two latest of steps 10, 20, 30, 32.
    kept = sorted(os.path.basename(p)[:-len(".index")] for p in glob.glob(f"{model_dir}/ckpt-*.index"))
    assert kept == ["ckpt-30", "ckpt-32"]
    assert stage1["first"]["step"] == 30 and stage1["second"]["step"] == 32
    assert stage1["second"]["resumed_from"].endswith("ckpt-30")
    assert any(m.startswith("Resuming from ") and m.endswith("ckpt-30 at step 30")
               for m in stage1["messages"])
    # The resolved config, loadable as a config file.
    resolved = configs.load_config(os.path.join(model_dir, "config.yaml"))
    assert resolved.train.optimizer.learning_rate == pytest.approx(0.04)
    assert resolved.train_data.input_path == stage1["config"].train_data.input_path
    # The JSON log: every second step, continuing after the resume; the loss fell.
    log = _log(model_dir)
    assert [r["step"] for r in log] == list(range(2, 31, 2)) + [32]
    assert {"total_loss", "class_loss", "box_loss", "rpn_class_loss", "rpn_box_loss",
            "learning_rate", "examples_per_second"} <= set(log[0])
    assert np.mean([r["total_loss"] for r in log[-3:]]) < 0.6 * log[0]["total_loss"]
    # TensorBoard: scalars and the detection images.
    events = glob.glob(f"{model_dir}/train/events.out.tfevents.*")
    tags = set()
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert {"total_loss", "learning_rate", "examples_per_second"} <= tags
    assert any(tag.startswith("detections") for tag in tags)


def test_restore_model_matches_training(stage1, workdir):
    model = checkpointing.restore_model(stage1["config"], stage1["model_dir"])[0]
    reader = tf.train.load_checkpoint(os.path.join(stage1["model_dir"], "ckpt-32"))
    saved = reader.get_tensor("model/head_conv/bias/.ATTRIBUTES/VARIABLE_VALUE")
    np.testing.assert_array_equal(np.asarray(model.head_conv.bias), saved)
    assert np.abs(saved).max() > 0  # trained: the bias started at zero
    stmn_config = tiny_config("synthetic_tiny_stmn", str(workdir / "data"))
    with pytest.raises(ValueError, match="does not match the 'stmn' model"):
        checkpointing.restore_model(stmn_config, stage1["model_dir"])[0]


def test_stage2_init_from_transfers_weights(stage1, workdir, strategy):
    config = tiny_config("synthetic_tiny_stmn", str(workdir / "data"),
                         train__optimizer__learning_rate=0.0, train__optimizer__warmup_steps=0,
                         train__summary_every=1, **NO_IMAGES)
    model_dir = str(workdir / "stmn")
    messages = []
    trainer.train(config, model_dir, steps=3, strategy=strategy, progress=False,
                  init_from=stage1["model_dir"], echo=messages.append)
    assert any(m.startswith("Initialised from ") and "ckpt-32" in m for m in messages)
    # Only the six U convolutions of the two memories and their MatchTrans offset
    # priors (the tiny config's) start fresh.
    fresh = [m for m in messages if m.startswith("  fresh: ")]
    assert len(fresh) == 8 and sum(m.endswith("/offset_prior") for m in fresh) == 2
    stage1_log = _log(stage1["model_dir"])
    start, end = stage1_log[0]["total_loss"], np.mean([r["total_loss"] for r in stage1_log[-3:]])
    stage2 = np.mean([r["total_loss"] for r in _log(model_dir)])
    # A fresh STMN starts where a fresh R-FCN does (about `start`); the transferred one
    # starts about where stage 1 ended.
    assert abs(stage2 - end) < 0.35 * (start - end), (start, end, stage2)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(workdir, strategy):
    config = tiny_config("synthetic_tiny_rfcn", str(workdir / "data"),
                         train__optimizer__learning_rate=1e20, train__optimizer__warmup_steps=0,
                         train__checkpoint_every=1, **NO_IMAGES)
    model_dir = str(workdir / "nan")
    with pytest.raises(trainer.NonFiniteLossError, match=r"non-finite loss at step (\d+)") as info:
        trainer.train(config, model_dir, steps=10, strategy=strategy, progress=False)
    bad_step = int(re.search(r"step (\d+)", str(info.value)).group(1))
    assert bad_step >= 2
    # The last checkpoint is the step before the bad one, and it loads.
    latest = tf.train.latest_checkpoint(model_dir)
    assert latest.endswith(f"ckpt-{bad_step - 1}")
    model = checkpointing.restore_model(config, model_dir)[0]
    assert all(np.all(np.isfinite(np.asarray(w))) for w in model.weights)
