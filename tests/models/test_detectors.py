"""RFCN and STMN: overfitting one synthetic clip, output contracts, shapes, saving."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.models import RFCN
from stmn_tf.models import STMN
from stmn_tf.models import build_model
from stmn_tf.models import tiny_model_config
from stmn_tf.models import transfer_rfcn_to_stmn
from stmn_tf.models.builders import detector_parts
from stmn_tf.models.proposal_generator import ProposalGenerator
from tests.models.synthetic import make_clip
from tests.models.synthetic import mean_average_precision
from tests.models.synthetic import tiny_config
from tests.models.synthetic import tiny_rfcn
from tests.models.synthetic import tiny_stmn

STEPS = 150


def numpy(outputs):
    return {k: np.asarray(v) for k, v in outputs.items()}


def overfit(model, clip, steps=STEPS, learning_rate=3e-3):
    """Trains with `fit`; returns (initial total loss, mean total loss of the last 25 steps)."""
    initial = np.mean([float(model.compute_losses(clip)["total_loss"]) for _ in range(3)])
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    data = tf.data.Dataset.from_tensors(clip).repeat()
    history = model.fit(data, steps_per_epoch=25, epochs=steps // 25, verbose=0)
    return initial, history.history["total_loss"][-1]


def assert_overfits(model, clip, initial, final):
    assert final < 0.1 * initial, (initial, final)
    ap = mean_average_precision(numpy(model.predict_step(clip)), clip)
    assert ap > 0.9, ap


@pytest.fixture(scope="module")
def clip():
    return make_clip()


@pytest.fixture(scope="module")
def trained_rfcn(clip):
    keras.utils.set_random_seed(0)
    model = tiny_rfcn(2)
    initial, final = overfit(model, clip)
    return model, initial, final


@pytest.mark.slow
def test_rfcn_overfits_one_clip(trained_rfcn, clip):
    model, initial, final = trained_rfcn
    assert_overfits(model, clip, initial, final)
    # External proposals (the ground truth) instead of the RPN's.
    outputs = numpy(model.predict_step(dict(clip, proposals=clip["boxes"])))
    assert mean_average_precision(outputs, clip) > 0.9


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant,direction",
    [
        ("stmn", "bidirectional"),
        ("stmn_no_matchtrans", "bidirectional"),
        ("convgru_pretrain", "bidirectional"),
        ("stmn", "forward"),
    ],
)
def test_stmn_variant_overfits_one_clip(clip, variant, direction):
    keras.utils.set_random_seed(0)
    config = tiny_model_config("stmn", num_classes=2)
    config.override({"memory": {"variant": variant, "direction": direction}})
    model = build_model(config)
    assert isinstance(model, STMN)
    if variant.startswith("convgru"):
        # ConvGRU's memory is in (-1, 1) (tanh): the linear head after it needs larger
        # weights than after the STMM's ReLU memory (the range mismatch of paper
        # Sec. 3.2), so it gets a larger learning rate and more steps.
        initial, final = overfit(model, clip, steps=300, learning_rate=1e-2)
    else:
        initial, final = overfit(model, clip)
    assert_overfits(model, clip, initial, final)


@pytest.mark.slow
def test_convgru_freshfc_fine_tunes_from_rfcn(trained_rfcn, clip):
    # The ablation's point: the memory and the head after it start fresh, the rest is
    # the trained static detector; fine-tuning must still fit the clip.
    keras.utils.set_random_seed(1)
    config = tiny_model_config("stmn", num_classes=2)
    config.override({"memory": {"variant": "convgru_freshfc"}})
    model = build_model(config)
    transfer_rfcn_to_stmn(trained_rfcn[0], model, "convgru_freshfc")
    initial, final = overfit(model, clip, steps=300, learning_rate=1e-2)
    assert_overfits(model, clip, initial, final)


@pytest.mark.parametrize("build", [tiny_rfcn, tiny_stmn])
def test_outputs_for_variable_sizes_and_lengths(build):
    model = build(3)
    detect = tf.function(
        lambda images: model.detect(images),
        input_signature=[tf.TensorSpec([None, None, None, None, 3], tf.float32)],
    )
    for shape in [(1, 1, 64, 80, 3), (2, 4, 96, 64, 3)]:
        images = np.random.default_rng(0).uniform(0, 255, shape).astype("float32")
        out = numpy(detect(images))
        b, t = shape[:2]
        assert out["detection_boxes"].shape == (b, t, 20, 4)
        assert out["detection_scores"].shape == (b, t, 20)
        assert out["detection_classes"].shape == (b, t, 20)
        assert out["num_detections"].shape == (b, t)
        n = out["num_detections"]
        assert np.all(n > 0)
        valid = np.arange(20)[None, None] < n[..., None]
        classes = out["detection_classes"][valid]
        assert classes.min() >= 1 and classes.max() <= 3
        boxes = out["detection_boxes"][valid]
        assert np.all((boxes >= 0) & (boxes <= 1))
        assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])
        scores = out["detection_scores"]
        assert np.all(np.diff(scores, axis=-1)[valid[..., 1:]] <= 1e-6)  # sorted per frame


def test_compute_losses_in_a_distributed_step(clip):
    model = tiny_rfcn(2)
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")

    @tf.function
    def step(inputs):
        return strategy.run(lambda x: model.compute_losses(x, training=True), args=(inputs,))

    losses = step(clip)
    assert set(losses) == {"rpn_class_loss", "rpn_box_loss", "class_loss", "box_loss", "total_loss"}
    assert all(v.dtype == tf.float32 and v.shape == () for v in losses.values())
    total = sum(float(losses[k]) for k in losses if k != "total_loss")
    np.testing.assert_allclose(float(losses["total_loss"]), total, rtol=1e-5)
    # Untrained: objectness ~ log 2, classes ~ log 3.
    np.testing.assert_allclose(float(losses["rpn_class_loss"]), np.log(2.0), atol=0.05)
    np.testing.assert_allclose(float(losses["class_loss"]), np.log(3.0), atol=0.1)


@pytest.mark.parametrize("cls,build", [(RFCN, tiny_rfcn), (STMN, tiny_stmn)])
def test_keras_save_and_load(tmp_path, clip, cls, build):
    model = build(2, post_processing={"score_threshold": 0.0})
    expected = numpy(model.predict_step(clip))
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is cls
    # The parts' configs, as JSON stores them (tuples come back as lists).
    assert json.loads(json.dumps(loaded.get_config())) == json.loads(json.dumps(model.get_config()))
    got = numpy(loaded.predict_step(clip))
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-5, err_msg=key)


def test_stmn_memory_and_saliency(clip):
    model = tiny_stmn(2)
    memory = model.memory(clip).numpy()
    assert memory.shape == (1, 3, 6, 6, 64)  # 96 px / 16; forward then backward
    saliency = model.saliency(clip["images"]).numpy()
    np.testing.assert_allclose(saliency, np.linalg.norm(memory, axis=-1), rtol=1e-5)
    # The backward memory of the last frame has read only that frame, as the forward
    # memory of the first frame has: a clip of one frame gives the same first step.
    one = model.memory({"images": clip["images"][:, :1]}).numpy()
    np.testing.assert_allclose(one[0, 0, ..., :32], memory[0, 0, ..., :32], rtol=1e-4, atol=1e-5)


def test_unknown_arguments_raise():
    with pytest.raises(ValueError, match="memory.direction"):
        tiny_stmn(2, memory={"direction": "sideways"})
    with pytest.raises(ValueError, match="memory must be"):
        STMN(memory=keras.layers.Conv2D(8, 3), **detector_parts(tiny_config("stmn")))
    parts = detector_parts(tiny_config("rfcn"))
    parts["proposal_generator"] = ProposalGenerator((16.0,), (1.0,))
    with pytest.raises(ValueError, match="9 anchors per position.*proposal_generator has 1"):
        RFCN(head_conv=keras.layers.Conv2D(64, 3), **parts)
    config = tiny_model_config("stmn")
    config.override({"memory": {"variant": "lstm"}})
    with pytest.raises(ValueError, match="variant"):
        build_model(config)


@pytest.mark.parametrize("direction", ["bidirectional", "forward"])
def test_stmn_burn_in_reads_the_context_frames_without_their_gradient(direction):
    model = tiny_stmn(2, memory={"direction": direction})
    full = make_clip(frames=7, seed=1)
    images = tf.constant(full["images"])
    clip = {"images": images[:, 2:5], "boxes": full["boxes"][:, 2:5], "labels": full["labels"][:, 2:5],
            "context_images": tf.concat([images[:, :2], images[:, 5:]], axis=1)}
    # The memory at the clip's frames is that of the whole span (forward-only: of the
    # span up to the clip's end), at the clip's frames.
    expected = model.memory({"images": images if direction == "bidirectional" else images[:, :5]})
    got = model.clip_head_features(model.extract_features(clip["images"]), clip)
    np.testing.assert_allclose(got.numpy(), expected.numpy()[:, 2:5], rtol=1e-4, atol=1e-5)
    unburned = model.clip_head_features(model.extract_features(clip["images"]), {})
    assert np.abs(unburned.numpy() - got.numpy()).max() > 1e-3  # the context mattered
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(clip["images"])
        tape.watch(clip["context_images"])
        loss = model.compute_losses(clip, training=True)["total_loss"]
    assert tape.gradient(loss, clip["context_images"]) is None
    assert np.abs(tape.gradient(loss, clip["images"]).numpy()).max() > 0
    memory_kernel = model.memory_cells()[0].conv_w.kernel
    assert np.abs(tape.gradient(loss, memory_kernel).numpy()).max() > 0
