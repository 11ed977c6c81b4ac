"""train.py under MirroredStrategy and MultiWorkerMirroredStrategy (SIGKILL and resume:
tests/training/test_resume.py).

Each case runs in fresh processes: splitting the CPU into logical devices and
TF_CONFIG must precede TensorFlow's initialisation.
"""

import glob
import json
import os
import re
import subprocess
import sys

import pytest

from tests.training import helpers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The tiny synthetic data, generated once (train.py would generate it too, but two
    workers starting together would both write it)."""
    directory = str(tmp_path_factory.mktemp("distributed") / "data")
    helpers.tiny_config("synthetic_tiny_stmn", directory)
    return directory


def test_mirrored_step_matches_one_device():
    # Two steps with global-norm clipping active (0.5 is below the tiny model's
    # gradient norm): the clipping must see the all-reduced gradient, and each
    # replica's loss must count 1/2, for the two runs to agree.
    result = subprocess.run([sys.executable, "-m", "tests.training.mirrored_step", "0.5"],
                            cwd=helpers.REPO, env=helpers.environment(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for one, two in zip(report["one_device"], report["mirrored"]):
        for name in one:
            assert two[name] == pytest.approx(one[name], rel=1e-5, abs=1e-6), name
    # The weights moved, and by the same amounts (float32 summation order aside).
    assert report["update"] > 1e-3
    assert report["difference"] < 1e-4 * report["update"]


def test_two_workers_on_localhost(tmp_path, data_dir):
    """Two plain train.py processes with TF_CONFIG: MultiWorkerMirroredStrategy (picked
    by --strategy auto), the same losses on both, files only in the chief's directory."""
    ports = [helpers.free_port(), helpers.free_port()]
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    model_dir = str(tmp_path / "model")
    processes = []
    for index in range(2):
        env = helpers.environment(TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        command = helpers.train_command("synthetic_tiny_rfcn", model_dir, data_dir, 3,
                                        train__checkpoint_every=2, train__summary_every=1)
        processes.append(subprocess.Popen(command, cwd=str(tmp_path), env=env, text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=300)
            outputs.append(out)
            assert process.returncode == 0, err[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    losses = []
    for index, out in enumerate(outputs):
        match = re.search(rf"\[worker {index}\] Trained steps 0\.\.3 .*loss (\S+) \(", out)
        assert match, out
        losses.append(float(match.group(1)))
    assert losses[0] == losses[1]
    # 2 workers x 1 replica: the global batch of 4 clips is split in two.
    assert "on 2 replica(s)" in outputs[0]
    assert sorted(os.path.basename(p) for p in glob.glob(f"{model_dir}/ckpt-*.index")) == [
        "ckpt-2.index", "ckpt-3.index"]
    with open(os.path.join(model_dir, "train_log.jsonl")) as f:
        logged = [json.loads(line) for line in f]
    assert [r["step"] for r in logged] == [1, 2, 3]  # the chief's, written once
    assert logged[-1]["total_loss"] == pytest.approx(losses[0], abs=1e-4)
