"""The VID devkit evaluator: hand-computed cases, pycocotools, a loop-based reference."""

import math

import numpy as np
import pytest

from stmn_tf.evaluation import vid_eval


def frame(boxes, labels, scores=None, **extra):
    out = {"boxes": np.asarray(boxes, np.float64).reshape(-1, 4), "labels": np.asarray(labels, np.int64)}
    if scores is not None:
        out["scores"] = np.asarray(scores, np.float64)
    out.update(extra)
    return out


# ---------------------------------------------------------------- loop-based reference

def ref_iou(a, b):
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    ua = (a[2] - a[0] + 1.0) * (a[3] - a[1] + 1.0) + (b[2] - b[0] + 1.0) * (b[3] - b[1] + 1.0) - inter
    return inter / ua


def ref_ap(rec, prec):
    mrec = [0.0] + list(rec) + [1.0]
    mpre = [0.0] + list(prec) + [0.0]
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    return sum((mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1) if mrec[i + 1] != mrec[i])


def ref_motion(gts, offset=10, mode="window"):
    """FGFA's motion IoU: mean IoU of the instance with itself over t-10..t+10, t excluded."""
    where = {}
    for f, g in enumerate(gts):
        for k in range(len(g["labels"])):
            if "track_ids" in g:
                where[(g.get("video_id", 0), int(g["track_ids"][k]), g.get("frame_index", f))] = g["boxes"][k]
    shifts = [d for d in range(-offset, offset + 1) if d] if mode == "window" else [-offset, offset]
    out = []
    for f, g in enumerate(gts):
        values = []
        for k in range(len(g["labels"])):
            ious = []
            if "track_ids" in g:
                for d in shifts:
                    key = (g.get("video_id", 0), int(g["track_ids"][k]), g.get("frame_index", f) + d)
                    if key in where:
                        ious.append(ref_iou(g["boxes"][k], where[key]))
            values.append(sum(ious) / len(ious) if ious else math.nan)
        out.append(values)
    return out


def ref_evaluate(gts, dets, num_classes, motion_range=None, mode="window"):
    """The devkit (and, with motion_range, FGFA's motion split) as plain loops."""
    motion = ref_motion(gts, mode=mode) if motion_range else None
    if motion:
        # FGFA's loader: an empty frame's cell of the .mat becomes one entry 0.
        entries = [m for ms in motion for m in (ms if len(ms) else [0.0])]
        lo, hi = motion_range
        empty_weight = sum(lo <= m <= hi for m in entries) / len(entries)
    npos = [0.0] * (num_classes + 1)
    records = []  # (label, score, order, tp, fp)
    order = 0
    for f, (g, d) in enumerate(zip(gts, dets)):
        ig = [not (motion_range[0] <= m <= motion_range[1]) for m in motion[f]] if motion else [False] * len(g["labels"])
        for k, label in enumerate(g["labels"]):
            if not ig[k]:
                npos[label] += 1
        idx = sorted(range(len(d["scores"])), key=lambda j: -d["scores"][j])  # stable
        detected = [False] * len(g["labels"])
        for j in idx:
            bb = d["boxes"][j]
            ovmax, kmax, ov_ig, ov_nig = -math.inf, -1, -1.0, -1.0
            for k in range(len(g["labels"])):
                gb = g["boxes"][k]
                w, h = gb[2] - gb[0] + 1, gb[3] - gb[1] + 1
                thr = min(0.5, w * h / ((w + 10.0) * (h + 10.0)))
                ov = ref_iou(bb, gb)
                if g["labels"][k] == d["labels"][j] and not detected[k] and ov >= thr and ov > ovmax:
                    ovmax, kmax = ov, k
                if ig[k] and ov > ov_ig:
                    ov_ig = ov
                if not ig[k] and ov > ov_nig:
                    ov_nig = ov
            if kmax >= 0:
                detected[kmax] = True
                tp, fp = (0.0 if ig[kmax] else 1.0), 0.0
            elif not motion:
                tp, fp = 0.0, 1.0
            elif ov_nig > ov_ig:
                tp, fp = 0.0, 1.0
            elif ov_ig > ov_nig:
                tp, fp = 0.0, 0.0
            elif len(g["labels"]) == 0:
                tp, fp = 0.0, empty_weight
            else:
                tp, fp = 0.0, sum(ig) / len(ig)
            records.append((int(d["labels"][j]), float(d["scores"][j]), order, tp, fp))
            order += 1
    aps = {}
    for c in range(1, num_classes + 1):
        if npos[c] == 0:
            aps[c] = math.nan
            continue
        rows = sorted([r for r in records if r[0] == c], key=lambda r: (-r[1], r[2]))
        ctp = cfp = 0.0
        rec, prec = [], []
        for r in rows:
            ctp += r[3]
            cfp += r[4]
            rec.append(ctp / npos[c])
            prec.append(ctp / max(ctp + cfp, np.finfo(np.float64).eps))
        aps[c] = ref_ap(rec, prec)
    values = [v for v in aps.values() if not math.isnan(v)]
    return aps, (sum(values) / len(values) if values else math.nan)


def random_case(rng, num_frames=40, num_classes=4, videos=2):
    gts, dets = [], []
    for f in range(num_frames):
        n = int(rng.integers(0, 5))
        xy = rng.integers(0, 300, (n, 2)).astype(float)
        wh = rng.choice([4.0, 12.0, 40.0, 120.0], (n, 2)) * rng.uniform(0.8, 1.2, (n, 2))
        boxes = np.round(np.concatenate([xy, xy + wh], 1))
        labels = rng.integers(1, num_classes + 1, n)
        tracks = rng.permutation(5)[:n]  # unique in a frame, as in VID
        gts.append(frame(boxes, labels, video_id=f * videos // num_frames, frame_index=f % (num_frames // videos) * 2,
                         track_ids=tracks))
        m = int(rng.integers(0, 8))
        if n:
            src = rng.integers(0, n, m)
            db = boxes[src] + rng.normal(0, 4, (m, 4)) * rng.choice([0.2, 1.0, 5.0], (m, 1))
            db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
            dl = np.where(rng.uniform(size=m) < 0.7, labels[src], rng.integers(1, num_classes + 1, m))
        else:
            xy = rng.uniform(0, 300, (m, 2))
            db = np.concatenate([xy, xy + rng.uniform(2, 100, (m, 2))], 1)
            dl = rng.integers(1, num_classes + 1, m)
        # Rounded scores: ties within and across frames.
        dets.append(frame(np.round(db), dl, np.round(rng.uniform(size=m), 1)))
    return gts, dets


# ---------------------------------------------------------------- hand-computed cases

def hand_case():
    gts = [
        frame([[0, 0, 99, 99]], [1]),
        frame([[50, 50, 149, 149], [200, 200, 209, 209]], [1, 2]),
        frame([], []),  # no object, one false positive
        frame([], []),  # empty frame: no object, no detection
    ]
    dets = [
        # A duplicate (0.8) of the 0.9 detection, and a class without ground truth (3).
        frame([[0, 0, 99, 99], [0, 0, 99, 99], [10, 10, 60, 60]], [1, 1, 3], [0.8, 0.9, 0.95]),
        # IoU 0.96 with the first object; IoU 1/3 with the 10x10 one, whose threshold is
        # 100 / 400 = 0.25: found only thanks to the relaxed threshold.
        frame([[52, 50, 151, 149], [205, 200, 214, 209]], [1, 2], [0.7, 0.6]),
        frame([[0, 0, 50, 50]], [1], [0.85]),
        frame([], [], []),
    ]
    return gts, dets


def test_hand_computed_ap():
    gts, dets = hand_case()
    result = vid_eval.evaluate(gts, dets, num_classes=3, coco=False)
    # Class 1 by score: 0.9 TP, 0.85 FP, 0.8 FP (duplicate), 0.7 TP; 2 objects.
    # Precision envelope 1 up to recall 0.5, then 0.5: AP = 0.5 * 1 + 0.5 * 0.5.
    assert result["AP"][1] == pytest.approx(0.75)
    assert result["AP"][2] == pytest.approx(1.0)
    assert math.isnan(result["AP"][3])
    assert result["mAP"] == pytest.approx((0.75 + 1.0) / 2)
    assert result["num_groundtruths"] == {1: 2, 2: 1, 3: 0}
    assert result["num_detections"] == 6


def test_small_object_needs_the_relaxed_threshold():
    gts, dets = hand_case()
    strict = vid_eval.evaluate(gts, dets, num_classes=3, pixel_tolerance=0.0, coco=False)
    assert strict["AP"][2] == 0.0
    assert strict["mAP"] == pytest.approx(0.75 / 2)
    assert vid_eval.match_threshold_xyxy_pixels([[200, 200, 209, 209]])[0] == pytest.approx(0.25)


def test_detection_takes_the_highest_iou_ground_truth():
    # det 0.9 reaches both objects (IoU 0.68 with A, 0.96 with B) and must take B, leaving
    # A for det 0.8, which reaches only A (0.54; 0.33 with B). Given low score first.
    gts = [frame([[0, 0, 99, 99], [20, 0, 119, 99]], [1, 1])]
    dets = [frame([[-30, 0, 69, 99], [18, 0, 117, 99]], [1, 1], [0.8, 0.9])]
    assert vid_eval.evaluate(gts, dets, 1, coco=False)["AP"][1] == pytest.approx(1.0)


def test_wrong_class_is_a_false_positive():
    gts = [frame([[0, 0, 99, 99]], [1])]
    dets = [frame([[0, 0, 99, 99], [0, 0, 99, 99]], [2, 1], [0.9, 0.5])]
    result = vid_eval.evaluate(gts, dets, 2, coco=False)
    assert result["AP"][1] == pytest.approx(1.0)
    assert math.isnan(result["AP"][2])


def test_missing_class_has_zero_ap_and_no_detections_at_all():
    gts = [frame([[0, 0, 9, 9]], [1]), frame([[0, 0, 9, 9]], [2])]
    dets = [frame([[0, 0, 9, 9]], [1], [0.5]), frame([], [], [])]
    result = vid_eval.evaluate(gts, dets, 2, coco=False)
    assert result["AP"] == {1: 1.0, 2: 0.0}
    assert result["mAP"] == 0.5
    empty = vid_eval.evaluate(gts, [frame([], [], [])] * 2, 2, coco=False)
    assert empty["mAP"] == 0.0


def test_input_errors():
    gts, dets = hand_case()
    with pytest.raises(ValueError, match="frames"):
        vid_eval.evaluate(gts, dets[:-1], 3, coco=False)
    with pytest.raises(ValueError, match="labels.*1..2"):
        vid_eval.evaluate(gts, dets, 2, coco=False)
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        vid_eval.evaluate([frame([], [])], [{"boxes": np.zeros((1, 3)), "labels": [1], "scores": [1]}], 1,
                          coco=False)


def test_iou_uses_the_plus_one_convention():
    # 10x10 pixels each, overlapping in 5x10: 50 / 150.
    assert vid_eval.paired_iou_xyxy_pixels([[0, 0, 9, 9]], [[5, 0, 14, 9]])[0] == pytest.approx(1 / 3)
    assert vid_eval.paired_iou_xyxy_pixels([[0, 0, 9, 9]], [[10, 0, 19, 9]])[0] == 0.0


# ---------------------------------------------------------------- against references

@pytest.mark.parametrize("seed", range(6))
def test_matches_loop_reference_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    gts, dets = random_case(rng)
    result = vid_eval.evaluate(gts, dets, 4, coco=False)
    ref_aps, ref_map = ref_evaluate(gts, dets, 4)
    for c in range(1, 5):
        assert result["AP"][c] == pytest.approx(ref_aps[c], abs=1e-12, nan_ok=True)
    assert result["mAP"] == pytest.approx(ref_map, abs=1e-12)


@pytest.mark.parametrize("seed,mode", [(s, "window") for s in range(6)] + [(6, "endpoints")])
def test_motion_split_matches_loop_reference(seed, mode):
    rng = np.random.default_rng(100 + seed)
    gts, dets = random_case(rng, num_frames=60)
    result = vid_eval.evaluate(gts, dets, 4, coco=False, motion_mode=mode)
    for name, motion_range in vid_eval.MOTION_RANGES.items():
        ref_aps, ref_map = ref_evaluate(gts, dets, 4, motion_range, mode)
        for c in range(1, 5):
            assert result[f"AP_{name}"][c] == pytest.approx(ref_aps[c], abs=1e-12, nan_ok=True)
        assert result[f"mAP_{name}"] == pytest.approx(ref_map, abs=1e-12, nan_ok=True)
    ours = vid_eval.motion_ious(gts, mode=mode)
    for mine, ref in zip(ours, ref_motion(gts, mode=mode)):
        np.testing.assert_allclose(mine, np.asarray(ref, float), atol=1e-12)


def test_agrees_with_pycocotools_ap50():
    # Where the protocols agree: large boxes (threshold 0.5 both ways, the +1 does not
    # flip any match), at most 100 detections per image, and full recall with constant
    # precision, so that COCO's 101-point and the devkit's all-point AP coincide: class c
    # has k_c false positives ranked before each of its true positives, AP = 1 / (k_c + 1).
    rng = np.random.default_rng(7)
    num_frames, fps_before = 30, {1: 0, 2: 1, 3: 3}
    gts = [{"boxes": [], "labels": []} for _ in range(num_frames)]
    dets = [{"boxes": [], "labels": [], "scores": []} for _ in range(num_frames)]
    score = 1.0
    for c, k in fps_before.items():
        for _ in range(8):
            for _ in range(k):  # a false positive far from every object
                f = int(rng.integers(num_frames))
                xy = rng.uniform(2000, 3000, 2)
                dets[f]["boxes"].append([*xy, *(xy + 80)])
                dets[f]["labels"].append(c)
                dets[f]["scores"].append(score)
                score -= 1e-3
            f = int(rng.integers(num_frames))
            xy = rng.uniform(0, 1500, 2)
            box = np.round([*xy, *(xy + rng.uniform(60, 200, 2))])
            gts[f]["boxes"].append(box)
            gts[f]["labels"].append(c)
            dets[f]["boxes"].append(box + rng.integers(-2, 3, 4))
            dets[f]["labels"].append(c)
            dets[f]["scores"].append(score)
            score -= 1e-3
    gts = [frame(g["boxes"], g["labels"]) for g in gts]
    dets = [frame(d["boxes"], d["labels"], d["scores"]) for d in dets]
    result = vid_eval.evaluate(gts, dets, 4, coco=True)
    for c, k in fps_before.items():
        assert result["AP"][c] == pytest.approx(1 / (k + 1))
        assert result["coco_AP50_per_class"][c] == pytest.approx(1 / (k + 1))
    assert math.isnan(result["coco_AP50_per_class"][4])
    assert result["mAP"] == pytest.approx(result["coco_AP50"])
    assert 0 < result["coco_AP"] <= result["coco_AP50"]


def test_100k_detections_vectorised():
    # 1000 frames x 100 detections: loops over boxes would take minutes here.
    rng = np.random.default_rng(0)
    gts, dets = [], []
    for _ in range(1000):
        xy = rng.uniform(0, 500, (3, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 200, (3, 2))], 1)
        gts.append(frame(boxes, rng.integers(1, 31, 3), track_ids=np.arange(3)))
        db = boxes[rng.integers(0, 3, 100)] + rng.normal(0, 8, (100, 4))
        dets.append(frame(db, rng.integers(1, 31, 100), rng.uniform(size=100)))
    result = vid_eval.evaluate(gts, dets, 30, coco=False)
    assert 0 < result["mAP"] < 1
    assert result["num_detections"] == 100000


# ---------------------------------------------------------------- motion split by hand

def motion_video():
    """25 frames: a static box (class 1), one moving 2 px / frame (class 2, medium), one
    moving 50 px / frame (class 3, fast). Boxes are 101 x 101 pixels (inclusive)."""
    gts = []
    for t in range(25):
        boxes = [[0, 0, 100, 100], [300 + 2 * t, 0, 400 + 2 * t, 100], [600 + 50 * t, 300, 700 + 50 * t, 400]]
        gts.append(frame(boxes, [1, 2, 3], track_ids=[0, 1, 2]))
    return gts


def shifted_iou(shift):
    """IoU of two 101 x 101 boxes `shift` pixels apart along x (devkit +1 widths)."""
    return max(101 - shift, 0) / (101 + min(shift, 101)) if shift < 101 else 0.0


def test_window_motion_iou_of_constructed_tracks():
    m = np.stack(vid_eval.motion_ious(motion_video()))
    assert np.allclose(m[:, 0], 1.0)
    # Frames 0 and 24 see one side of the window (d = 1..10), frames 10..14 both sides:
    # each distance |d| as often, so the same mean.
    full = np.mean([shifted_iou(2 * d) for d in range(1, 11)])
    for t in (0, 10, 12, 14, 24):
        assert m[t, 1] == pytest.approx(full)
    # Frame 5: |d| = 1..5 on both sides, 6..10 on the right only: 15 frames.
    at5 = (2 * sum(shifted_iou(2 * d) for d in range(1, 6)) + sum(shifted_iou(2 * d) for d in range(6, 11))) / 15
    assert m[5, 1] == pytest.approx(at5)
    assert (m[:, 1] > 0.7).all() and (m[:, 1] < 0.9).all()
    # 50 px a frame: IoU 51/151 at d = 1, 1/201 at d = 2, then 0.
    assert m[12, 2] == pytest.approx((2 * 51 / 151 + 2 * 1 / 201) / 20)
    assert m[5, 2] == pytest.approx((2 * 51 / 151 + 2 * 1 / 201) / 15)
    # The earlier definition: the IoU at t-10 and t+10 only.
    ends = np.stack(vid_eval.motion_ious(motion_video(), mode="endpoints"))
    assert ends[12, 1] == pytest.approx(shifted_iou(20)) and ends[12, 2] == 0.0
    assert ends[5, 1] == pytest.approx(shifted_iou(20))  # frame -5 does not exist
    with pytest.raises(ValueError, match="mode"):
        vid_eval.motion_ious(motion_video(), mode="pairs")


def test_window_motion_iou_hand_cases():
    # A 3-frame track of 10 x 10 boxes moving 5 px a frame: IoU 50/150 with a neighbour,
    # 0 two frames apart.
    track = [frame([[5 * t, 0, 5 * t + 9, 9]], [1], track_ids=[7]) for t in range(3)]
    m = np.concatenate(vid_eval.motion_ious(track))
    np.testing.assert_allclose(m, [(1 / 3 + 0) / 2, (1 / 3 + 1 / 3) / 2, (1 / 3 + 0) / 2])
    # Frames 10 apart are in the window, 11 apart are not; a one-frame track and one seen
    # again only 11 frames later have no motion IoU: in no split.
    far = [frame([[0, 0, 9, 9]], [1], track_ids=[1], frame_index=0),
           frame([[5, 0, 14, 9]], [1], track_ids=[1], frame_index=10),
           frame([[0, 0, 9, 9]], [1], track_ids=[2], frame_index=20),
           frame([[0, 0, 9, 9]], [1], track_ids=[3], frame_index=40),
           frame([[0, 0, 9, 9]], [1], track_ids=[3], frame_index=51)]
    m = np.concatenate(vid_eval.motion_ious(far))
    np.testing.assert_allclose(m[:2], [1 / 3, 1 / 3])
    assert np.isnan(m[2:]).all()
    # Tracks are per video; frames without track ids are in no split.
    two = [frame([[0, 0, 9, 9]], [1], track_ids=[0], video_id="a", frame_index=0),
           frame([[0, 0, 9, 9]], [1], track_ids=[0], video_id="b", frame_index=1),
           frame([[0, 0, 9, 9]], [1], video_id="b", frame_index=2)]
    assert np.isnan(np.concatenate(vid_eval.motion_ious(two))).all()
    # Up to 20 frames in the mean: a static box with one frame of IoU 0 in the window.
    long = [frame([[0, 0, 9, 9] if t != 3 else [50, 50, 59, 59]], [1], track_ids=[0]) for t in range(30)]
    assert vid_eval.motion_ious(long)[13][0] == pytest.approx(19 / 20)
    assert vid_eval.motion_ious(long)[0][0] == pytest.approx(9 / 10)


def test_motion_split_scores_as_fgfa():
    gts = motion_video()
    dets = []
    for t, g in enumerate(gts):
        boxes, labels, scores = [g["boxes"][0], g["boxes"][1]], [1, 2], [0.8, 0.8]
        if t < 12:  # the fast object is found in 12 frames of 25
            boxes.append(g["boxes"][2]); labels.append(3); scores.append(0.9)
        if t == 0:  # a class-3 box on the (slow) static object: wrong class
            boxes.append(g["boxes"][0]); labels.append(3); scores.append(0.95)
        if t == 20:  # a class-1 box on nothing: FGFA weighs it by the out-of-split fraction
            boxes.append([2000, 2000, 2100, 2100]); labels.append(1); scores.append(0.99)
        dets.append(frame(boxes, labels, scores))
    result = vid_eval.evaluate(gts, dets, 3, coco=False)
    # Overall, class 3: one FP ranked first, then 12 TPs of 25 objects.
    assert result["AP"][3] == pytest.approx(12 / 25 * 12 / 13)
    # Fast split: the FP overlaps only an out-of-split object, so it weighs 0.
    assert result["AP_fast"][3] == pytest.approx(12 / 25)
    assert math.isnan(result["AP_fast"][1]) and math.isnan(result["AP_fast"][2])
    assert result["mAP_fast"] == pytest.approx(12 / 25)
    # Slow split, class 1: the FP overlaps nothing in a frame with 2 of 3 objects
    # outside the split: weight 2/3, ranked before 25 TPs.
    assert result["AP_slow"][1] == pytest.approx(25 / (25 + 2 / 3))
    assert result["AP"][1] == pytest.approx(25 / 26)
    assert result["AP_medium"][2] == pytest.approx(1.0)
    assert result["mAP_medium"] == pytest.approx(1.0)
    # Without track ids there is no split.
    plain = [frame(g["boxes"], g["labels"]) for g in gts]
    assert "mAP_fast" not in vid_eval.evaluate(plain, dets, 3, coco=False)


def test_empty_frame_false_positive_weight():
    # 25 frames with the three objects, then E = 5 frames without ground truth, one of
    # them with a class-1 box ranked first. FGFA's entries: 75 ground truths (25 slow,
    # 25 medium, 25 fast) and 5 zeros for the empty frames, which are "fast".
    gts = motion_video() + [frame([], [], frame_index=25 + k) for k in range(5)]
    dets = [frame(g["boxes"], [1, 2, 3], [0.8, 0.8, 0.8]) for g in gts[:25]]
    dets += [frame([[0, 0, 50, 50]], [1], [0.99])] + [frame([], [], [])] * 4
    result = vid_eval.evaluate(gts, dets, 3, coco=False)
    slow_weight = 25 / 80
    fast_weight = (25 + 5) / 80
    assert result["AP_slow"][1] == pytest.approx(25 / (25 + slow_weight))
    assert result["AP"][1] == pytest.approx(25 / 26)
    # Class 1 has no fast ground truth; put the FP on class 3 to see the fast weight.
    dets[25] = frame([[0, 0, 50, 50]], [3], [0.99])
    result = vid_eval.evaluate(gts, dets, 3, coco=False)
    assert result["AP_fast"][3] == pytest.approx(25 / (25 + fast_weight))
    assert result["AP_medium"][2] == pytest.approx(1.0)


def test_bounds_are_inclusive():
    # A 19 x 10 box shifted 1 px: motion IoU 18*10 / (2*190 - 180) = 0.9 exactly, which
    # is in both slow [0.9, 1] and medium [0.7, 0.9], as in FGFA's code.
    track = [frame([[t, 0, t + 18, 9]], [1], track_ids=[0]) for t in range(2)]
    assert vid_eval.motion_ious(track)[0][0] == 0.9
    dets = [frame(g["boxes"], [1], [0.5]) for g in track]
    result = vid_eval.evaluate(track, dets, 1, coco=False)
    assert result["AP_slow"][1] == 1.0 and result["AP_medium"][1] == 1.0
    assert math.isnan(result["AP_fast"][1])
