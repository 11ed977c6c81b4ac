"""Empty things: clips without objects in training, frames with no proposal or no
detection, videos without objects and a one-frame video at inference and evaluation."""

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.configs import load_config
from stmn_tf.evaluation import vid_eval
from stmn_tf.inference.postprocess import link_video
from stmn_tf.inference.postprocess import make_runner
from stmn_tf.inference.video import prepared_frame
from stmn_tf.models.builders import build_model
from stmn_tf.training.step import replica_train_step
from tests.models.synthetic import make_clip
from tests.serving.conftest import CONFIG

SIZE = 64


@pytest.fixture(scope="module")
def config():
    return load_config(CONFIG)


@pytest.fixture(scope="module")
def stmn(config):
    tf.keras.utils.set_random_seed(5)
    model = build_model(config.model)
    model({"images": tf.zeros([1, 2, SIZE, SIZE, 3])})
    return model


def _empty_clip(frames=2):
    """A clip of the synthetic rectangles with every annotation removed."""
    clip = make_clip(frames=frames, height=SIZE, width=SIZE)
    return dict(clip, boxes=np.zeros_like(clip["boxes"]), labels=np.zeros_like(clip["labels"]))


def test_training_step_on_clips_without_objects(config, stmn):
    batch = _empty_clip()
    losses = stmn.compute_losses(dict(batch, sampling_seed=tf.constant([0, 1], tf.int64)))
    values = {k: float(v) for k, v in losses.items()}
    assert all(np.isfinite(v) for v in values.values()), values
    # No foreground anywhere: no box regression, only background classification.
    assert values["rpn_box_loss"] == 0.0 and values["box_loss"] == 0.0
    assert values["rpn_class_loss"] > 0.0 and values["class_loss"] > 0.0
    optimizer = tf.keras.optimizers.SGD(0.01)
    optimizer.build(stmn.trainable_variables)
    before = [np.asarray(v) for v in stmn.trainable_variables]
    step = replica_train_step(stmn, optimizer, batch, weight_decay=1e-4)
    assert np.isfinite(float(step["total_loss"]))
    after = [np.asarray(v) for v in stmn.trainable_variables]
    assert all(np.all(np.isfinite(a)) for a in after)
    assert any(np.abs(a - b).max() > 0 for a, b in zip(after, before))


def test_zero_proposals_give_finite_losses_and_no_detections(stmn):
    batch = _empty_clip()
    proposals = np.zeros([1, 2, 5, 4], np.float32)  # no area: every proposal invalid
    losses = stmn.compute_losses(dict(batch, proposals=proposals))
    assert all(np.isfinite(float(v)) for v in losses.values())
    # With the ground truth there, only its boxes are RoIs: still finite.
    clip = make_clip(frames=2, height=SIZE, width=SIZE)
    assert np.isfinite(float(stmn.compute_losses(dict(clip, proposals=proposals))["total_loss"]))
    features = stmn.extract_features(tf.constant(batch["images"]))
    outputs = stmn.detect_from_features(features, tf.constant([SIZE, SIZE]), proposals=proposals)
    n = stmn.decoder.max_detections
    assert outputs["num_detections"].numpy().tolist() == [[0, 0]]
    assert outputs["detection_boxes"].shape == (1, 2, n, 4)
    assert not np.any(outputs["detection_boxes"].numpy())
    assert not np.any(outputs["detection_scores"].numpy())


def _frames(images):
    return [prepared_frame(image, (SIZE, SIZE), (SIZE, SIZE), t, video_id="v")
            for t, image in enumerate(images)]


@pytest.mark.slow
@pytest.mark.parametrize("online", [False, True])
def test_no_detection_and_one_frame_videos_run_link_and_evaluate(config, stmn, online):
    images = make_clip(frames=3, height=SIZE, width=SIZE)["images"][0]
    previous = stmn.decoder.score_threshold
    stmn.decoder.score_threshold = 1.01  # above every softmax score: no detection anywhere
    try:
        runner = make_runner(stmn, config.eval, online=online, window=3, stride=1)
        empty = list(runner.run(_frames(images)))
        one = list(runner.run(_frames(images[:1])))
    finally:
        stmn.decoder.score_threshold = previous
    assert len(empty) == 3 and len(one) == 1
    for frame in empty + one:
        assert frame["boxes"].shape == (0, 4) and len(frame["scores"]) == 0
    for method in ("seq_nms", "viterbi"):
        linked = link_video(empty, method)
        assert [len(f["scores"]) for f in linked] == [0, 0, 0]
    # A video without objects and without detections, and one with objects but no
    # detection: AP 0 for the class with ground truth, NaN for the others.
    groundtruths = [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)} for _ in empty]
    groundtruths[1] = {"boxes": np.array([[2.0, 2.0, 30.0, 30.0]]), "labels": np.array([1])}
    result = vid_eval.evaluate(groundtruths, empty, config.model.num_classes, coco=False)
    assert result["num_detections"] == 0 and result["AP"][1] == 0.0
    assert np.isnan(result["AP"][2])
    nothing = vid_eval.evaluate(groundtruths[:1], empty[:1], config.model.num_classes, coco=False)
    assert np.isnan(nothing["mAP"]) or nothing["mAP"] == 0.0
