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
    out = seq_nms_xyxy(frames, nms_threshold=0.3, variant="exhaustive")
    for f, o in zip(frames, out):
        keep = nms_xyxy(f["boxes"], f["scores"], 0.3)
        assert sorted(o["indices"].tolist()) == sorted(keep.tolist())
        np.testing.assert_allclose(o["scores"], f["scores"][o["indices"]])
    # FGFA's Seq-NMS stops at once when a class has no link: every box kept as it was.
    for f, o in zip(frames, seq_nms_xyxy(frames)):
        assert sorted(o["indices"].tolist()) == list(range(30))
        np.testing.assert_array_equal(o["scores"], f["scores"][o["indices"]])
        assert (o["track_ids"] == -1).all()


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
                            p[j] = [c[1] for c in cands if c[0] == v][0]
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
    out = seq_nms_xyxy(frames, variant="exhaustive")
    ref = brute_force_seq_nms(frames)
    for o, r in zip(out, ref):
        got = dict(zip(o["indices"].tolist(), o["scores"].tolist()))
        assert got.keys() == r.keys()
        for k in r:
            assert got[k] == pytest.approx(r[k])


# ---------------------------------------------------------------- FGFA's Seq-NMS

def devkit_iou(a, b):
    """IoU with the devkit's +1 pixel widths, one pair at a time."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = w * h
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area_a + area_b - inter)


def fgfa_reference(boxes, scores, link=0.5, nms=0.3, floor=0.01):
    """FGFA's seq_nms for one class as plain loops over link lists: links at IoU >= 0.5,
    a DP over live boxes rebuilt each round, stop when the best sum < 0.01 or no link is
    left. Returns per frame {box index: score} of the kept boxes."""
    n = len(boxes)
    score = [list(map(float, s)) for s in scores]
    dead = [[False] * len(s) for s in scores]  # in a sequence or suppressed
    gone = [set() for _ in range(n)]  # suppressed: dropped from the output
    links = [[[j for j in range(len(boxes[t + 1])) if devkit_iou(boxes[t][i], boxes[t + 1][j]) >= link]
              for i in range(len(boxes[t]))] for t in range(n - 1)]
    while True:
        value = [[0.0 if dead[t][i] else score[t][i] for i in range(len(score[t]))] for t in range(n)]
        back = [[-1] * len(score[t]) for t in range(n)]
        for t in range(1, n):
            for i, targets in enumerate(links[t - 1]):
                for j in targets:
                    total = value[t - 1][i] + score[t][j]
                    if total > value[t][j]:  # strict: the first predecessor wins ties
                        value[t][j], back[t][j] = total, i
        best, end = -1.0, None
        for t in range(n):  # the first maximum in frame order, then box order
            for j, v in enumerate(value[t]):
                if v > best:
                    best, end = v, (t, j)
        num_links = sum(len(x) for frame_links in links for x in frame_links)
        if end is None or best < floor or num_links == 0:
            break
        t, j = end
        path = [(t, j)]
        while back[t][j] != -1:
            t, j = t - 1, back[t][j]
            path.append((t, j))
        for t, j in path:
            score[t][j] = best / len(path)
            for k in range(len(boxes[t])):
                if k != j and not dead[t][k] and devkit_iou(boxes[t][j], boxes[t][k]) >= nms:
                    gone[t].add(k)
                    dead[t][k] = True
                    score[t][k] = 0.0
            dead[t][j] = True
        for t in range(n):  # a dead box keeps no link
            if t + 1 < n:
                links[t] = [[] if dead[t][i] else [j for j in x if not dead[t + 1][j]]
                            for i, x in enumerate(links[t])]
    return [{i: score[t][i] for i in range(len(score[t])) if i not in gone[t]} for t in range(n)]


def random_video(rng, num_frames, num_tracks, per_track, spread=8.0, integer=True):
    frames = []
    centres = rng.uniform(50, 250, (num_tracks, 2))
    for t in range(num_frames):
        n = num_tracks * per_track
        c = np.repeat(centres + 3 * t, per_track, axis=0) + rng.normal(0, spread, (n, 2))
        half = rng.uniform(15, 35, (n, 2))
        boxes = np.concatenate([c - half, c + half], 1)
        boxes = np.round(boxes) if integer else boxes
        keep = rng.uniform(size=n) < 0.85  # some frames miss some boxes
        scores = np.round(rng.uniform(size=n), 2)  # ties
        if rng.uniform() < 0.3:
            scores = scores * 0.004  # whole frames under the 0.01 floor
        frames.append({"boxes": boxes[keep], "scores": scores[keep], "labels": np.ones(keep.sum(), int)})
    return frames


@pytest.mark.parametrize("seed", range(8))
def test_seq_nms_default_is_fgfa(seed):
    rng = np.random.default_rng(50 + seed)
    frames = random_video(rng, num_frames=int(rng.integers(2, 12)), num_tracks=3, per_track=3)
    ref = fgfa_reference([f["boxes"] for f in frames], [f["scores"] for f in frames])
    out = seq_nms_xyxy(frames)
    for o, r in zip(out, ref):
        got = dict(zip(o["indices"].tolist(), o["scores"].tolist()))
        assert got == r  # the same boxes, the same scores to the last bit


def box_at(x, width=12):
    return [x, 0, x + width - 1, 11]  # 12 x 12 pixels


def one_class(boxes_per_frame, scores_per_frame):
    return [{"boxes": np.asarray(b, float).reshape(-1, 4), "scores": np.asarray(s, float),
             "labels": np.ones(len(s), int)} for b, s in zip(boxes_per_frame, scores_per_frame)]


def test_fgfa_links_at_iou_half_with_plus_one_pixels():
    # 12-pixel boxes 4 px apart: devkit IoU (12-4)/(12+4) = 0.5 exactly, linked (>= 0.5);
    # the continuous IoU is 7/15 and the exhaustive variant's rule is > 0.5: no link.
    frames = one_class([[box_at(0)], [box_at(4)]], [[0.6], [0.2]])
    assert iou_matrix_xyxy([box_at(0)], [box_at(4)], pixel_offset=1)[0, 0] == 0.5
    out = seq_nms_xyxy(frames)
    assert out[0]["scores"][0] == out[1]["scores"][0] == pytest.approx(0.4)
    assert out[0]["track_ids"][0] == out[1]["track_ids"][0] >= 0
    ex = seq_nms_xyxy(frames, variant="exhaustive")
    assert ex[0]["scores"][0] == 0.6 and ex[1]["scores"][0] == 0.2
    assert ex[0]["track_ids"][0] != ex[1]["track_ids"][0]
    # 5 px apart: 7/17 < 0.5, no link: FGFA has nothing to do.
    far = seq_nms_xyxy(one_class([[box_at(0)], [box_at(5)]], [[0.6], [0.2]]))
    assert far[0]["scores"][0] == 0.6 and far[0]["track_ids"][0] == -1


def test_fgfa_stops_when_no_link_is_left():
    # Frames 0-1: a linked pair (0.3 + 0.3). Frame 2: a lone box of 0.9 and a duplicate
    # of it (0.8, IoU 11/13). Round 1 takes the lone 0.9 (a one-frame sequence: a link is
    # still left) and suppresses its duplicate; round 2 the pair; then no link is left.
    frames = one_class([[box_at(0)], [box_at(2)], [box_at(300), box_at(301)]],
                       [[0.3], [0.3], [0.9, 0.8]])
    out = seq_nms_xyxy(frames)
    assert out[2]["indices"].tolist() == [0] and out[2]["scores"][0] == 0.9
    assert out[0]["scores"][0] == out[1]["scores"][0] == pytest.approx(0.3)
    # With a pair worth more (0.5 + 0.5) it goes first, and then no link is left: the
    # lone box and its duplicate are both kept, unprocessed.
    frames[0]["scores"] = frames[1]["scores"] = np.asarray([0.5])
    out = seq_nms_xyxy(frames)
    assert out[2]["indices"].tolist() == [0, 1] and (out[2]["track_ids"] == -1).all()
    # Without the pair, the class has no link at all: the duplicate survives.
    alone = seq_nms_xyxy(one_class([[box_at(300), box_at(301)]], [[0.9, 0.8]]))
    assert alone[0]["indices"].tolist() == [0, 1] and (alone[0]["track_ids"] == -1).all()
    # The exhaustive variant suppresses it either way.
    assert seq_nms_xyxy(one_class([[box_at(300), box_at(301)]], [[0.9, 0.8]]),
                        variant="exhaustive")[0]["indices"].tolist() == [0]


def test_fgfa_score_floor():
    # A linked pair whose sum 0.006 + 0.003 is under 0.01: nothing is rescored, the
    # overlapping duplicate (IoU 0.85 in frame 0) is not suppressed.
    frames = one_class([[box_at(0), box_at(1)], [box_at(2)]], [[0.006, 0.001], [0.003]])
    out = seq_nms_xyxy(frames)
    assert sorted(out[0]["indices"].tolist()) == [0, 1]
    assert out[0]["scores"].tolist() == [0.006, 0.001] and out[1]["scores"].tolist() == [0.003]
    # At 0.012 it is taken: (0.009 + 0.003) / 2 each, the duplicate suppressed.
    frames[0]["scores"] = np.asarray([0.009, 0.001])
    out = seq_nms_xyxy(frames)
    assert out[0]["indices"].tolist() == [0]
    assert out[0]["scores"][0] == out[1]["scores"][0] == pytest.approx(0.006)


def test_seq_nms_tie_rules():
    # Frame 1's box is linked to both boxes of frame 0 (equal scores 0.4; IoU 0.2 with
    # +1 pixels, 33/209 without): the sequence goes through the lower index (0); box 1
    # of frame 0 overlaps nothing of the sequence and stays.
    frames = one_class([[box_at(0), box_at(16)], [box_at(8)]], [[0.4, 0.4], [0.5]])
    for variant in ("fgfa", "exhaustive"):
        out = seq_nms_xyxy(frames, variant=variant, link_iou_threshold=0.1)
        tid = out[1]["track_ids"][0]
        assert out[0]["track_ids"][out[0]["indices"] == 0][0] == tid
        assert out[0]["track_ids"][out[0]["indices"] == 1][0] != tid
    # Two separate sequences with the same sum: the one ending earlier is taken first
    # (track id 0), then at equal ends the lower box index.
    frames = one_class([[box_at(0)], [box_at(2), box_at(200)], [box_at(202)]],
                       [[0.3], [0.3, 0.3], [0.3]])
    out = seq_nms_xyxy(frames)
    assert out[0]["track_ids"][0] == 0 and out[2]["track_ids"][0] == 1


def test_seq_nms_rejects_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        seq_nms_xyxy(track_video(), variant="greedy")


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


def test_viterbi_tie_rule():
    # Frame 1 has two boxes of the same score, each linked to frame 0's box (IoU 2/3):
    # the tube takes the first in input order, whichever box that is.
    a, left, right = [0, 0, 100, 100], [-20, 0, 80, 100], [20, 0, 120, 100]
    for second in ([left, right], [right, left]):
        frames = [{"boxes": np.asarray(b, float), "scores": np.asarray(s), "labels": np.ones(len(s), int)}
                  for b, s in (([a], [0.5]), (second, [0.5, 0.5]))]
        out = viterbi_link_xyxy(frames, nms_threshold=None)
        tube = out[0]["track_ids"][0]
        assert out[1]["track_ids"][out[1]["indices"] == 0][0] == tube
        assert out[1]["track_ids"][out[1]["indices"] == 1][0] != tube


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
