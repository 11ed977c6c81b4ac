"""ModelConfig -> models; the docstring examples."""

import doctest

import numpy as np
import pytest

from stmn_tf.configs import ConfigError
from stmn_tf.configs import apply_overrides
from stmn_tf.models import RFCN
from stmn_tf.models import STMN
from stmn_tf.models import VARIANTS
from stmn_tf.models import ModelConfig
from stmn_tf.models import build_model
from stmn_tf.models import tiny_model_config
from stmn_tf.models import features as features_module
from stmn_tf.models import rfcn as rfcn_module
from stmn_tf.models import rfcn_head as rfcn_head_module
from stmn_tf.models import rpn as rpn_module
from stmn_tf.models import stmn as stmn_module
from stmn_tf.models import proposal_generator as proposal_generator_module
from stmn_tf.models.builders import build_rfcn
from stmn_tf.models.builders import build_stmn


def test_default_config_is_the_paper():
    config = ModelConfig()
    assert config.backbone.depth == 101 and not config.backbone.tiny
    assert (config.features.reduce_channels, config.features.channels) == (512, 1024)
    assert (config.head.channels, config.head.rfcn_channels, config.head.ps_roi_bins) == (1024, 512, 7)
    assert (config.roi_sampling.num_rois, config.roi_sampling.foreground_fraction) == (300, 0.25)
    assert (config.memory.filters, config.memory.k, config.memory.variant) == (512, 2, "stmn")


@pytest.mark.parametrize(
    "variant,cell,align",
    [
        ("stmn", "stmm", True),
        ("stmn_no_matchtrans", "stmm", False),
        ("convgru_pretrain", "convgru", False),
        ("convgru_freshfc", "convgru", False),
    ],
)
def test_variants(variant, cell, align):
    config = tiny_model_config("stmn", num_classes=4)
    config.override({"memory": {"variant": variant}})
    model = build_model(config)
    assert isinstance(model, STMN)
    assert model.num_classes == 4
    assert model.memory_layer.cell == cell
    assert all(c.align == align for c in model.memory_cells())
    assert set(VARIANTS) == {"stmn", "stmn_no_matchtrans", "convgru_pretrain", "convgru_freshfc"}


def test_config_overrides_reach_the_model():
    config = tiny_model_config("rfcn", num_classes=5)
    config.override({"head": {"ps_roi_bins": 3}, "post_processing": {"nms_iou": 0.45}})
    model = build_model(config)
    assert isinstance(model, RFCN)
    assert model.rfcn_head.class_conv.filters == 3 * 3 * 6
    assert model.decoder.nms_iou == 0.45
    config = tiny_model_config("stmn")
    config.override({"memory": {"variant": "stmn", "align": False, "direction": "forward"}})
    model = build_model(config)
    assert not model.memory_cells()[0].align and model.memory_direction == "forward"


@pytest.mark.parametrize(
    "module", [features_module, rpn_module, rfcn_head_module, rfcn_module, stmn_module,
               proposal_generator_module]
)
def test_docstring_examples(module):
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    globs = dict(vars(module), np=np, build_rfcn=build_rfcn, build_stmn=build_stmn,
                 tiny_model_config=tiny_model_config)
    tests = [t for t in finder.find(module, globs=globs) if t.examples]
    assert tests
    for test in tests:
        runner.run(test)
    assert runner.failures == 0


def test_affinity_power_reaches_the_memory():
    config = tiny_model_config("stmn")
    assert config.memory.affinity_power == 1.0  # the authors' MatchTrans by default
    assert build_model(config).memory_layer.affinity_power == 1.0
    config.override({"memory": {"affinity_power": 4}})
    model = build_model(config)
    assert model.memory_layer.affinity_power == 4
    assert all(cell.affinity_power == 4 for cell in model.memory_cells())
    assert model.get_config()["memory"]["config"]["layer"]["config"]["affinity_power"] == 4
    config.override({"memory": {"direction": "forward"}})
    assert build_model(config).memory_layer.cell.affinity_power == 4


@pytest.mark.parametrize("option", ["centre_features", "feature_gradient", "offset_prior"])
def test_boolean_matchtrans_option_reaches_the_memory(option):
    config = tiny_model_config("stmn")
    assert getattr(config.memory, option) is False  # the authors' MatchTrans by default
    config.override({"memory": {option: True}})
    model = build_model(config)
    assert all(getattr(cell, option) is True for cell in model.memory_cells())
    assert model.get_config()["memory"]["config"]["layer"]["config"][option] is True
    setattr(config.memory, option, "yes")
    with pytest.raises(ValueError, match=f"memory.{option} must be true or false"):
        build_model(config)


@pytest.mark.parametrize("option", ["feature_gradient", "offset_prior"])
def test_twin_only_options_refuse_the_compiled_op(option):
    config = tiny_model_config("stmn")
    config.override({"memory": {option: True, "implementation": "custom_op"}})
    with pytest.raises(ValueError, match=f"memory.{option} needs memory.implementation"):
        build_model(config)


@pytest.mark.parametrize("power", [0.0, -2.0, float("inf"), float("nan")])
def test_bad_affinity_power_is_named(power):
    config = tiny_model_config("stmn")
    config.memory.affinity_power = power
    with pytest.raises(ValueError, match=r"memory.affinity_power must be a finite number > 0"):
        build_model(config)


def test_affinity_power_override_must_be_a_number():
    config = tiny_model_config("stmn")
    with pytest.raises(ConfigError, match="memory.affinity_power must be float"):
        apply_overrides(config, {"memory": {"affinity_power": "sharp"}})
