"""Seq-NMS and the D&T-style Viterbi tube linker on constructed tracks."""

import numpy as np
import pytest

from stmn_tf.ops.seq_nms import iou_matrix_xyxy
from stmn_tf.ops.seq_nms import nms_xyxy
from stmn_tf.ops.seq_nms import seq_nms_xyxy
from stmn_tf.ops.tube_linking import viterbi_link_xyxy


def track_video(num_frames=9, weak_frame=4):
    """One object moving 2 px / frame (class 1, score 0.9, but 0.2 in `weak_frame`),
    a near duplicate of it in every frame (0.1), and a one-frame false positive far away
    in frame 2 (0.3)."""
    frames = []
    for t in range(num_frames):
        box = [100 + 2 * t, 100, 200 + 2 * t, 200]
        boxes = [box, [box[0] + 5, 100, box[2] + 5, 200]]
        scores = [0.2 if t == weak_frame else 0.9, 0.1]
        labels = [1, 1]
        if t == 2:
            boxes.append([500, 500, 550, 550])
            scores.append(0.3)
            labels.append(1)
        frames.append({"boxes": np.asarray(boxes, float), "scores": np.asarray(scores),
                       "labels": np.asarray(labels)})
    return frames


def score_of(out_frame, index):
    hit = np.flatnonzero(out_frame["indices"] == index)
    return out_frame["scores"][hit[0]] if len(hit) else None


def test_seq_nms_rescores_a_weak_frame_of_a_track():
    frames = track_video()
    out = seq_nms_xyxy(frames, rescore="avg")
    # The track's best sequence: the main box in every frame (sum 8 * 0.9 + 0.2).
    expected = (8 * 0.9 + 0.2) / 9
    for t in range(9):
        assert score_of(out[t], 0) == pytest.approx(expected)
    assert out[4]["scores"][0] == pytest.approx(expected)  # 0.2 before
    # The overlapping duplicate is suppressed in every frame.
    for t in range(9):
        assert score_of(out[t], 1) is None
    # The one-frame false positive stays as it was.
    assert score_of(out[2], 2) == pytest.approx(0.3)
    ids = {int(o["track_ids"][o["indices"] == 0][0]) for o in out}
    assert len(ids) == 1
    assert out[2]["track_ids"][out[2]["indices"] == 2][0] not in ids


def test_seq_nms_max_rescoring_and_classes_are_separate():
    frames = track_video()
    for f in frames:
        f["labels"] = f["labels"].copy()
        f["labels"][1] = 2  # the duplicate is another class: no suppression across classes
    out = seq_nms_xyxy(frames, rescore="max")
    assert score_of(out[4], 0) == pytest.approx(0.9)
    assert score_of(out[4], 1) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="rescore"):
        seq_nms_xyxy(frames, rescore="median")


def test_seq_nms_unlinked_boxes_are_per_frame_nms():
    rng = np.random.default_rng(0)
    frames = []
    for t in range(3):  # frames far apart in space: no links
        xy = rng.uniform(0, 100, (30, 2)) + 1000 * t
        boxes = np.concatenate([xy, xy + rng.uniform(10, 40, (30, 2))], 1)
        frames.append({"boxes": boxes, "scores": rng.uniform(size=30), "labels": np.ones(30, int)})
    out = seq_nms_xyxy(frames, nms_threshold=0.3)
    for f, o in zip(frames, out):
        keep = nms_xyxy(f["boxes"], f["scores"], 0.3)
        assert sorted(o["indices"].tolist()) == sorted(keep.tolist())
        np.testing.assert_allclose(o["scores"], f["scores"][o["indices"]])


def brute_force_seq_nms(frames, link=0.5, nms=0.3):
    """Seq-NMS with a full DP over all frames at every iteration (one class)."""
    boxes = [np.asarray(f["boxes"], float) for f in frames]
    scores = [np.asarray(f["scores"], float) for f in frames]
    alive = [np.ones(len(s), bool) for s in scores]
    out = [dict() for _ in frames]
    while any(a.any() for a in alive):
        best, pred = [], []
        for t in range(len(frames)):
            b = np.where(alive[t], scores[t], -np.inf)
            p = np.full(len(b), -1)
            if t:
                iou = iou_matrix_xyxy(boxes[t - 1], boxes[t])
                for j in range(len(b)):
                    if not alive[t][j]:
                        continue
                    cands = [(best[t - 1][i], i) for i in range(len(b_prev)) if alive[t - 1][i] and iou[i, j] > link]
                    if cands:
                        v = max(c[0] for c in cands)
                        if v > 0:
                            b[j] += v
                            p[j] = [c[1] for c in cands if c[0] == v][-1]
            best.append(b)
            pred.append(p)
            b_prev = b
        t = int(np.argmax([x.max() if len(x) else -np.inf for x in best]))
        path = [int(np.argmax(best[t]))]
        while pred[t - len(path) + 1][path[-1]] >= 0:
            path.append(int(pred[t - len(path) + 1][path[-1]]))
        path.reverse()
        t0 = t - len(path) + 1
        value = np.mean([scores[t0 + k][j] for k, j in enumerate(path)])
        for k, j in enumerate(path):
            out[t0 + k][j] = value
            alive[t0 + k] &= iou_matrix_xyxy(boxes[t0 + k][j:j + 1], boxes[t0 + k])[0] < nms
            alive[t0 + k][j] = False
    return out


@pytest.mark.parametrize("seed", range(3))
def test_seq_nms_matches_a_full_recomputation(seed):
    rng = np.random.default_rng(seed)
    frames = []
    centres = rng.uniform(50, 250, (4, 2))
    for t in range(12):
        c = np.repeat(centres + 3 * t, 3, axis=0) + rng.normal(0, 8, (12, 2))
        boxes = np.concatenate([c - 30, c + 30], 1)
        frames.append({"boxes": boxes, "scores": rng.uniform(size=12), "labels": np.ones(12, int)})
    out = seq_nms_xyxy(frames)
    ref = brute_force_seq_nms(frames)
    for o, r in zip(out, ref):
        got = dict(zip(o["indices"].tolist(), o["scores"].tolist()))
        assert got.keys() == r.keys()
        for k in r:
            assert got[k] == pytest.approx(r[k])


def test_viterbi_links_a_track_and_boosts_it():
    frames = track_video()
    out = viterbi_link_xyxy(frames)
    # NMS at 0.4 removes the duplicate (IoU 0.9); the tube is the main box everywhere,
    # and the false positive forms no tube of its own (frame 2 only): it keeps its score.
    main = [0.9] * 9
    main[4] = 0.2
    boost = 2 * np.mean(sorted(main, reverse=True)[:5])
    for t in range(9):
        assert score_of(out[t], 0) == pytest.approx(main[t] + boost)
        assert score_of(out[t], 1) is None
    assert score_of(out[2], 2) == pytest.approx(0.3)
    assert out[2]["track_ids"][out[2]["indices"] == 2][0] == -1
    # Weak frame now ranks above every untracked box.
    assert score_of(out[4], 0) > 1.0


def test_viterbi_prefers_linked_boxes_over_a_higher_scoring_jump():
    # Two candidates in the middle frame: one continues the track (0.5), one jumps far
    # away (0.6). The link bonus makes the tube follow the track.
    frames = []
    for t in range(3):
        boxes = [[0, 0, 100, 100]]
        scores = [0.9]
        if t == 1:
            boxes = [[0, 0, 100, 100], [400, 400, 500, 500]]
            scores = [0.5, 0.6]
        frames.append({"boxes": np.asarray(boxes, float), "scores": np.asarray(scores),
                       "labels": np.ones(len(scores), int)})
    out = viterbi_link_xyxy(frames)
    first_tube = out[0]["track_ids"][0]
    assert out[1]["track_ids"][out[1]["indices"] == 0][0] == first_tube
    no_bonus = viterbi_link_xyxy(frames, link_bonus=0.0)
    assert no_bonus[1]["track_ids"][no_bonus[1]["indices"] == 1][0] == no_bonus[0]["track_ids"][0]


def test_viterbi_per_class_and_empty_frames():
    frames = track_video()
    frames[3] = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)}
    frames[5]["labels"] = np.asarray([2, 2])  # class 2 only in frame 5
    out = viterbi_link_xyxy(frames)
    assert len(out[3]["scores"]) == 0
    tube = out[0]["track_ids"][0]
    for t in (0, 1, 2, 4, 6, 7, 8):  # the class-1 tube skips frames 3 and 5
        assert out[t]["track_ids"][out[t]["indices"] == 0][0] == tube
    assert out[5]["labels"][0] == 2 and out[5]["track_ids"][0] != tube


def test_linkers_on_an_empty_video():
    empty = [{"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, int)}] * 3
    for fn in (seq_nms_xyxy, viterbi_link_xyxy):
        out = fn(empty)
        assert len(out) == 3 and all(len(o["scores"]) == 0 for o in out)
