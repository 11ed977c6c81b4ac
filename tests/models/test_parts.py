"""The detector's setting-only parts: serialisation, validation, and their outputs
against NumPy references written here."""

import keras
import numpy as np
import pytest

from stmn_tf.models.anchor_labeler import AnchorLabeler
from stmn_tf.models.decoder import DetectionDecoder
from stmn_tf.models.proposal_generator import ProposalGenerator
from stmn_tf.models.roi_sampler import RoISampler
from tests.models.synthetic import tiny_rfcn


@pytest.mark.parametrize("part", [
    ProposalGenerator((16.0, 32.0), (0.5, 1.0), pre_nms_top_n_test=40, nms_iou=0.6),
    AnchorLabeler(64, 0.25, 0.6, 0.2),
    RoISampler(32, 0.5, 0.55, 0.45, 0.1, ohem_rois=8),
    DetectionDecoder(0.05, 0.4, 7),
])
def test_parts_round_trip_through_keras_serialisation(part):
    config = keras.saving.serialize_keras_object(part)
    copy = keras.saving.deserialize_keras_object(config)
    assert type(copy) is type(part)
    assert copy.get_config() == part.get_config()


@pytest.mark.parametrize("build,match", [
    (lambda: ProposalGenerator((), (1.0,)), "anchor_scales"),
    (lambda: AnchorLabeler(positive_iou=0.3, negative_iou=0.7), "negative_iou <= positive_iou"),
    (lambda: RoISampler(num_rois=0), "num_rois"),
    (lambda: RoISampler(num_rois=8, ohem_rois=9), "ohem_rois"),
    (lambda: RoISampler(foreground_fraction=1.5), "foreground_fraction"),
    (lambda: DetectionDecoder(max_detections=0), "max_detections"),
    (lambda: DetectionDecoder(nms_iou=1.5), "nms_iou"),
])
def test_bad_settings_are_named(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_proposal_budgets_follow_the_mode():
    generator = ProposalGenerator((16.0,), (1.0,), post_nms_top_n_train=9, post_nms_top_n_test=4)
    anchors = generator.anchors(4, 4, (64, 64))
    assert tuple(anchors.shape) == (16, 4)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 16)).astype("float32")
    deltas = np.zeros((2, 16, 4), "float32")
    rois, valid = generator(logits, deltas, anchors, training=True)
    assert tuple(rois.shape) == (2, 9, 4) and tuple(valid.shape) == (2, 9)
    rois, valid = generator(logits, deltas, anchors, training=False)
    assert tuple(rois.shape) == (2, 4, 4)
    # 16 px anchors on a stride-16 grid do not overlap: NMS keeps the 4 best by score.
    order = np.argsort(-logits, axis=1)[:, :4]
    expected = np.asarray(anchors)[order]
    np.testing.assert_allclose(np.asarray(rois), expected, atol=1e-6)
    assert np.asarray(valid).all()


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_decoder_against_numpy():
    # One frame, three RoIs, two classes; zero deltas keep the RoIs' boxes.
    rois = np.array([[[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.52], [0.6, 0.6, 0.9, 0.9]]],
                    "float32")
    logits = np.array([[[0.0, 3.0, 0.0], [0.0, 2.0, 0.5], [0.0, -1.0, 2.5]]], "float32")
    valid = np.array([[True, True, True]])
    out = DetectionDecoder(score_threshold=0.2, nms_iou=0.5, max_detections=5)(
        logits, np.zeros((1, 3, 4), "float32"), rois, valid)
    scores = _softmax(logits[0])[:, 1:]  # [R, C]
    # Per class: RoI 1 overlaps RoI 0 (IoU ~0.9) and is suppressed under class 1;
    # what is left above 0.2, best first.
    expected = sorted(
        [(scores[0, 0], 1, 0), (scores[2, 1], 2, 2)]
        + [(scores[r, 1], 2, r) for r in (0, 1) if scores[r, 1] > 0.2], reverse=True)
    n = int(out["num_detections"][0])
    assert n == len(expected)
    np.testing.assert_allclose(np.asarray(out["detection_scores"][0, :n]),
                               [e[0] for e in expected], rtol=1e-5)
    assert list(np.asarray(out["detection_classes"][0, :n])) == [e[1] for e in expected]
    np.testing.assert_allclose(np.asarray(out["detection_boxes"][0, :n]),
                               rois[0, [e[2] for e in expected]], atol=1e-6)
    # Invalid RoIs score 0 and are never detected.
    out = DetectionDecoder(0.2, 0.5, 5)(logits, np.zeros((1, 3, 4), "float32"), rois,
                                        np.zeros((1, 3), bool))
    assert int(out["num_detections"][0]) == 0


def test_detector_exposes_its_parts():
    model = tiny_rfcn(3, post_processing={"max_detections": 7})
    assert isinstance(model.decoder, DetectionDecoder) and model.decoder.max_detections == 7
    assert isinstance(model.proposal_generator, ProposalGenerator)
    assert model.num_classes == 3 and model.feature_channels == 64
    assert model.head_channels == 64
