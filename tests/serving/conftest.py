"""One tiny STMN, checkpointed and exported once for all serving tests."""

import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.configs import load_config
from stmn_tf.models.builders import build_model
from stmn_tf.serving.export import export_saved_model
from stmn_tf.serving.export import restore_for_export
from tests.models.synthetic import make_clip

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "synthetic_tiny_stmn.yaml")
# Not the padded 128 x 128 and not square: the resize, the padding and the box
# rescaling all do something.
FRAMES, HEIGHT, WIDTH = 3, 96, 80


def make_frames(frames=FRAMES, height=HEIGHT, width=WIDTH, seed=0):
    """uint8 `[T, H, W, 3]` RGB: two coloured rectangles moving over noise."""
    return np.clip(make_clip(frames, height, width, seed)["images"][0], 0, 255).astype(np.uint8)


def use_tf_match_trans(model):
    """The in-framework reference runs the pure-TF MatchTrans, as the portable export."""
    for cell in model.memory_cells():
        cell.implementation = "tf"
    return model


def save_checkpoint(model, directory):
    """A checkpoint as train.py writes them (CheckpointManager, `model=` key)."""
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), directory, 1)
    return manager.save()


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """The tiny STMN (random weights) restored from a checkpoint and exported.

    Attributes: `config`, `model` (restored, MatchTrans "tf"), `checkpoint_dir`,
    `base` (the export's base directory), `path` (`base/1`), `frames`.
    """
    root = tmp_path_factory.mktemp("serving")
    config = load_config(CONFIG)
    keras.utils.set_random_seed(7)
    source = build_model(config.model)
    # Random weights with decisive scores: with the group-norm backbone the features
    # are O(1), and the head's 0.01-std init alone would give every box ~1/(C+1).
    kernel = source.rfcn_head.class_conv.kernel
    kernel.assign(kernel * 100.0)
    checkpoint_dir = str(root / "model")
    save_checkpoint(source, checkpoint_dir)
    model, prefix = restore_for_export(config, checkpoint_dir)
    base = str(root / "export")
    path = export_saved_model(model, config.eval_data.image_size, base, checkpoint=prefix)
    return types.SimpleNamespace(
        config=config,
        model=use_tf_match_trans(model),
        checkpoint_dir=checkpoint_dir,
        base=base,
        path=path,
        frames=make_frames(),
    )


@pytest.fixture(scope="session")
def loaded(exported):
    return tf.saved_model.load(exported.path)
