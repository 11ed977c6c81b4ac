"""Tiny synthetic data and train.py runs for the training tests."""

import os
import socket
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_PY = os.path.join(REPO, "train.py")

# A synthetic data set that generates in a second or two: 4 short training videos in
# 2 shards (one per worker of the multi-worker test).
TINY_DATA = {
    "train_data.synthetic.num_train_videos": 4,
    "train_data.synthetic.num_val_videos": 1,
    "train_data.synthetic.num_test_videos": 1,
    "train_data.synthetic.num_det_images": 8,
    "train_data.synthetic.min_frames": 8,
    "train_data.synthetic.max_frames": 10,
    "train_data.synthetic.num_shards": 2,
    "train_data.shuffle_buffer_size": 4,
    "train_data.cycle_length": 2,
}


def overrides(data_dir, **extra):
    """The --params-override string: the tiny data in `data_dir` plus `extra`
    (keys with "__" for ".")."""
    values = {"synthetic_data_dir": data_dir, **TINY_DATA,
              **{k.replace("__", "."): v for k, v in extra.items()}}
    return ",".join(f"{k}={v}" for k, v in values.items())


def tiny_config(name, data_dir, **extra):
    """configs/<name>.yaml with the tiny data, resolved (the data generated)."""
    from stmn_tf import configs
    from stmn_tf.data import synthetic

    config = configs.load_config(os.path.join(REPO, "configs", f"{name}.yaml"),
                                 overrides(data_dir, **extra))
    return synthetic.resolve_synthetic_data(config)


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def train_command(config_name, model_dir, data_dir, steps, *args, **extra):
    return [sys.executable, TRAIN_PY, "--config", os.path.join(REPO, "configs", f"{config_name}.yaml"),
            "--model-dir", model_dir, "--steps", str(steps), "--no-progress",
            "--params-override", overrides(data_dir, **extra), *args]


def environment(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def run(command, cwd, timeout=240, **env):
    return subprocess.run(command, cwd=cwd, env=environment(**env), capture_output=True,
                          text=True, timeout=timeout)
