"""evaluate.py end to end on a few tiny synthetic videos, and the table / JSON helpers."""

import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

import evaluate
from stmn_tf.configs import load_config
from stmn_tf.data import synthetic
from stmn_tf.data.config import SyntheticConfig
from stmn_tf.evaluation import run
from stmn_tf.models.builders import build_model

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STMN_CONFIG = os.path.join(REPO, "configs", "synthetic_tiny_stmn.yaml")
RFCN_CONFIG = os.path.join(REPO, "configs", "synthetic_tiny_rfcn.yaml")
LENGTHS = (6, 7, 8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    data = SyntheticConfig(num_test_videos=3, min_frames=6, max_frames=8, num_shards=1)
    synthetic.write_tfrecords(str(root / "test"), data, split="test", num_shards=1)
    checkpoints = {}
    for name, config in (("stmn", STMN_CONFIG), ("rfcn", RFCN_CONFIG)):
        model = build_model(load_config(config).model)
        checkpoints[name] = tf.train.Checkpoint(model=model).save(str(root / name / "ckpt"))
    lengths = [len(synthetic.generate_video(data, "test", i)[0]) for i in range(3)]
    return root, checkpoints, lengths


@pytest.mark.slow
def test_evaluate_cli_end_to_end(setup, capsys):
    root, checkpoints, lengths = setup
    output = root / "results.json"
    results = evaluate.main([
        "--config", STMN_CONFIG, "--checkpoint", checkpoints["stmn"],
        "--static-checkpoint", checkpoints["rfcn"], "--data", str(root / "test-*"),
        "--output", str(output), "--window", "3", "--max-videos", "2", "--no-progress"])
    printed = capsys.readouterr().out
    assert f"2 videos, {sum(lengths[:2])} frames; window 3, stride 2, linking seq_nms" in printed
    methods = ["rfcn", "stmn", "stmn+seq_nms", "ensemble+seq_nms"]
    header = printed.splitlines()[1].split()
    assert header == ["class"] + methods
    with open(output) as f:
        written = json.load(f)
    assert list(written["methods"]) == methods
    assert written["num_frames"] == sum(lengths[:2])
    for name in methods:
        metrics = written["methods"][name]
        assert 0.0 <= metrics["mAP"] <= 1.0
        assert metrics["num_detections"] > 0
        assert {"mAP_slow", "coco_AP50"} <= set(metrics)
    # The ensemble is the union of both detectors' boxes before linking.
    assert (written["methods"]["ensemble+seq_nms"]["num_detections"]
            > written["methods"]["stmn+seq_nms"]["num_detections"])
    # The table shows the JSON's numbers.
    map_row = next(line for line in printed.splitlines() if line.startswith("mAP "))
    assert map_row.split()[1:] == [f"{100 * written['methods'][m]['mAP']:.1f}" for m in methods]
    assert results["settings"]["window"] == 3


def fake_results():
    return {"class_names": ["a", "b"], "methods": {
        "stmn": {"AP": {1: 0.5, 2: float("nan")}, "mAP": 0.5, "mAP_slow": 0.25, "mAP_medium": 1.0,
                 "mAP_fast": float("nan"), "coco_AP": 0.125, "coco_AP50": 0.75},
        "rfcn": {"AP": {1: 0.0, 2: float("nan")}, "mAP": 0.0}}}


def test_table_rows_and_missing_values():
    table = run.format_table(fake_results()).splitlines()
    assert table[0].split() == ["class", "stmn", "rfcn"]
    assert table[2].split() == ["a", "50.0", "0.0"]
    assert table[3].split() == ["b", "-", "-"]  # no ground truth
    assert table[5].split() == ["mAP", "50.0", "0.0"]
    assert len(table) == 6  # motion and COCO rows only when every method has them


def test_json_conversion():
    converted = run.to_json({"AP": {1: float("nan"), 2: np.float32(0.5)}, "n": np.int64(3)})
    assert converted == {"AP": {"1": None, "2": 0.5}, "n": 3}
    json.dumps(converted, allow_nan=False)
    assert math.isnan(fake_results()["methods"]["stmn"]["AP"][2])
