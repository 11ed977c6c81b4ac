"""Experiment configs: named defaults, YAML bases, overrides and their errors."""

import glob
import os

import pytest

from stmn_tf import configs
from stmn_tf.data import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_parse_params_override_nests_and_types():
    parsed = configs.parse_params_override(
        "train.steps=10, train.optimizer.decay_steps=[5, 8],model.type=stmn,train.mixed_precision=true")
    assert parsed == {"train": {"steps": 10, "optimizer": {"decay_steps": [5, 8]},
                                "mixed_precision": True},
                      "model": {"type": "stmn"}}


@pytest.mark.parametrize("text, message", [
    ("train.stepz=10", "unknown config key 'train.stepz'"),
    ("train.optimizer.lr=0.1", "unknown config key 'train.optimizer.lr'"),
    ("train.steps", "'train.steps' is not of the form key=value"),
    ("train..steps=1", "empty key part in 'train..steps'"),
    ("train.steps=abc", "train.steps must be int, got 'abc'"),
    ("train.mixed_precision=3", "train.mixed_precision must be bool, got 3"),
    ("train.optimizer=0.1", "train.optimizer is a group of settings, got 0.1"),
])
def test_override_errors_name_the_key(text, message):
    with pytest.raises(configs.ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        configs.load_config(os.path.join(REPO, "configs", "synthetic_tiny_rfcn.yaml"), text)


def test_every_yaml_names_its_base_and_loads():
    paths = sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")))
    names = {os.path.basename(p)[:-5] for p in paths}
    assert {"rfcn_resnet101_vid", "stmn_resnet101_vid", "stmn_no_matchtrans_resnet101_vid",
            "convgru_pretrain_resnet101_vid", "convgru_freshfc_resnet101_vid",
            "synthetic_tiny_rfcn", "synthetic_tiny_stmn"} <= names
    for path in paths:
        with open(path) as f:
            text = f.read()
        assert "\nbase: " in text and "named default" in text, path
        config = configs.load_config(path)
        name = os.path.basename(path)[:-5]
        assert config.model.type == ("rfcn" if "rfcn" in name else "stmn"), path
        for variant in ("stmn_no_matchtrans", "convgru_pretrain", "convgru_freshfc"):
            if variant in name:
                assert config.model.memory.variant == variant, path


def test_paper_settings_of_stage2():
    config = configs.load_config(os.path.join(REPO, "configs", "stmn_resnet101_vid.yaml"))
    assert (config.train_data.num_frames, config.train_data.frame_stride) == (7, 10)
    assert config.model.memory.filters == 512 and config.train_data.random_flip
    optimizer = config.train.optimizer
    assert (optimizer.learning_rate, optimizer.momentum, optimizer.schedule,
            optimizer.decay_factor) == (1e-3, 0.9, "plateau", 0.1)
    assert config.train_data.det_vid_ratio == 1.0 and config.train_data.det_input_path


def test_yaml_base_chain_and_unknown_base(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("base: parent.yaml\ntrain:\n  steps: 7\n")
    (tmp_path / "parent.yaml").write_text("base: synthetic_tiny_stmn\ntrain:\n  steps: 5\n  seed: 3\n")
    config = configs.load_config(str(child))
    assert (config.train.steps, config.train.seed, config.model.type) == (7, 3, "stmn")
    (tmp_path / "bad.yaml").write_text("base: no_such_default\n")
    with pytest.raises(configs.ConfigError, match="unknown base 'no_such_default'"):
        configs.load_config(str(tmp_path / "bad.yaml"))


def test_synthetic_paths_follow_the_data_dir_override(tmp_path, monkeypatch):
    monkeypatch.setattr("stmn_tf.data.synthetic.ensure_synthetic_dataset",
                        lambda directory, config, quiet=True: None)
    config = configs.load_config(os.path.join(REPO, "configs", "synthetic_tiny_stmn.yaml"),
                                 f"synthetic_data_dir=elsewhere,train_data.synthetic.num_train_videos=3")
    config = synthetic.resolve_synthetic_data(config, root=str(tmp_path))
    assert config.synthetic_data_dir == str(tmp_path / "elsewhere")
    assert config.train_data.input_path == str(tmp_path / "elsewhere" / "train-*-of-*")
    assert config.eval_data.input_path == str(tmp_path / "elsewhere" / "test-*-of-*")
    assert config.eval_data.synthetic.num_train_videos == 3
    again = synthetic.resolve_synthetic_data(config, root="/somewhere/else")
    assert again.train_data.input_path == str(tmp_path / "elsewhere" / "train-*-of-*")


def test_save_config_round_trips(tmp_path):
    config = configs.load_config(os.path.join(REPO, "configs", "synthetic_tiny_stmn.yaml"),
                                 "train.steps=11")
    path = str(tmp_path / "model" / "config.yaml")
    configs.save_config(config, path)
    assert configs.load_config(path).as_dict() == config.as_dict()


def test_exponent_floats_from_yaml_and_overrides(tmp_path):
    """YAML 1.1 reads '1e-4' as a string; configs take it as the number it is."""
    path = tmp_path / "lr.yaml"
    path.write_text("base: synthetic_tiny_rfcn\ntrain:\n  optimizer:\n    learning_rate: 1e-4\n")
    config = configs.load_config(str(path), "train.optimizer.momentum=5e-1")
    assert config.train.optimizer.learning_rate == pytest.approx(1e-4)
    assert config.train.optimizer.momentum == pytest.approx(0.5)
