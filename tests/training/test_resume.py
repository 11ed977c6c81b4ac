"""Exact resume: train.py killed with SIGKILL at a random step and resumed ends with the
weights of the same run uninterrupted (bit-identical on one device, within float
tolerance under MirroredStrategy on 2 CPU replicas).

The tiny R-FCN reads VID clips and DET images interleaved (det_vid_ratio 1), so the
input position covers both streams and the choice between them. Each case runs its
uninterrupted and its killed run side by side, in fresh processes (the CPU split and
op determinism are per process).
"""

import glob
import os
import random
import re
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.training import helpers

pytestmark = pytest.mark.slow

STEPS = 8
SETTINGS = dict(train__checkpoint_every=2, train__image_summary_every=0,
                train_data__global_batch_size=2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("resume") / "data")
    helpers.tiny_config("synthetic_tiny_rfcn", directory)
    return directory


def _command(model_dir, data_dir, strategy_args):
    return helpers.train_command("synthetic_tiny_rfcn", model_dir, data_dir, STEPS,
                                 *strategy_args, **SETTINGS)


def _latest_step(model_dir):
    with open(os.path.join(model_dir, "checkpoint")) as f:
        return int(re.search(r'^model_checkpoint_path: ".*ckpt-(\d+)"', f.read(), re.M).group(1))


def _training_state(prefix):
    """Every saved value but the input position and the save counter, by name."""
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if not name.startswith(("input/", "save_counter/", "_CHECKPOINTABLE_OBJECT_GRAPH"))}


def _killed_and_resumed(tmp_path, data_dir, strategy_args):
    """Runs the config uninterrupted and, side by side, killed at a random checkpoint
    (2 or 4 of 8) then resumed. Returns both final states and the resumed run's output."""
    full_dir, killed_dir = str(tmp_path / "full"), str(tmp_path / "killed")
    kill_after = random.choice([2, 4])
    env = helpers.environment()
    full = subprocess.Popen(_command(full_dir, data_dir, strategy_args), cwd=str(tmp_path),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killed = subprocess.Popen(_command(killed_dir, data_dir, strategy_args), cwd=str(tmp_path),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 400
        while not os.path.exists(f"{killed_dir}/ckpt-{kill_after}.index") and time.time() < deadline:
            assert killed.poll() is None, killed.stdout.read()[-3000:]
            time.sleep(0.02)
        # At a random point of the step after the checkpoint (or in the save itself).
        time.sleep(random.uniform(0.0, 0.3))
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert killed.returncode == -signal.SIGKILL
    last = _latest_step(killed_dir)
    assert kill_after <= last < STEPS, (kill_after, last)
    resumed = helpers.run(_command(killed_dir, data_dir, strategy_args), cwd=str(tmp_path),
                          timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    out, _ = full.communicate(timeout=400)
    assert full.returncode == 0, out[-3000:]
    assert re.search(rf"Resuming from \S*ckpt-{last} at step {last}\b", resumed.stdout), resumed.stdout
    assert "drawn with another seed" not in resumed.stdout
    return (_training_state(f"{full_dir}/ckpt-{STEPS}"),
            _training_state(f"{killed_dir}/ckpt-{STEPS}"))


def test_killed_run_resumes_bit_identical_on_one_device(tmp_path, data_dir):
    full, resumed = _killed_and_resumed(tmp_path, data_dir, ["--strategy", "one_device"])
    assert sorted(full) == sorted(resumed)
    assert any(name.startswith("model/") for name in full)
    for name in full:
        np.testing.assert_array_equal(resumed[name], full[name], err_msg=name)
    # The weights moved after the first checkpoint (so equality is not trivial).
    earlier = _training_state(str(tmp_path / "full" / "ckpt-2"))
    assert any(np.abs(full[name] - earlier[name]).max() > 0 for name in full
               if name.startswith("model/") and full[name].dtype.kind == "f")


def test_killed_run_resumes_within_float_tolerance_under_mirrored(tmp_path, data_dir):
    full, resumed = _killed_and_resumed(
        tmp_path, data_dir, ["--strategy", "mirrored", "--cpu-replicas", "2"])
    assert sorted(full) == sorted(resumed)
    for name, value in full.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(resumed[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(resumed[name], value, err_msg=name)
    names = {os.path.basename(p) for p in glob.glob(str(tmp_path / "killed" / "ckpt-*.index"))}
    assert f"ckpt-{STEPS}.index" in names


def test_restore_input_checks_the_replicas(tmp_path):
    from stmn_tf.training import checkpointing

    def holder(count, skip=0):
        iterators = {}
        for replica in range(count):
            iterator = iter(tf.data.Dataset.range(replica * 100, replica * 100 + 10))
            for _ in range(skip):
                next(iterator)
            iterators[f"replica_{replica}"] = iterator
        return tf.train.Checkpoint(**iterators)

    step = tf.Variable(3)
    without = tf.train.Checkpoint(step=step).save(str(tmp_path / "old" / "ckpt"))
    assert checkpointing.restore_input(holder(2), without) is False
    saved = tf.train.Checkpoint(step=step, input=holder(2, skip=4)).save(str(tmp_path / "new" / "ckpt"))
    restored = holder(2)
    assert checkpointing.restore_input(restored, saved) is True
    assert [int(next(restored.replica_0)), int(next(restored.replica_1))] == [4, 104]
    with pytest.raises(checkpointing.CheckpointMismatchError,
                       match=r"replicas \['replica_0', 'replica_1'\], this run has \['replica_0'\]"):
        checkpointing.restore_input(holder(1), saved)
