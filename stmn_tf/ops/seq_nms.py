"""Seq-NMS (Han et al., "Seq-NMS for Video Object Detection", 2016), NumPy only.

Per class, over one video: boxes of adjacent frames are linked when their IoU reaches
`link_iou_threshold` (0.5); the sequence with the highest sum of scores is found by
dynamic programming; its boxes are rescored (the sequence's average or maximum score);
in each of its frames the boxes that overlap its box by IoU >= `nms_threshold` (0.3)
are suppressed (removed) and the sequence's boxes leave the search; repeat.

Two variants (`variant=`):

- `"fgfa"` (the default): what the field runs, FGFA's `lib/nms/seq_nms.py` (Zhu et
  al., "Flow-Guided Feature Aggregation", ICCV 2017), box for box and score for score:
  IoU with the devkit's +1 pixel convention (`(xmax - xmin + 1) * (ymax - ymin + 1)`),
  links at IoU >= 0.5; a class stops as soon as no link between two live boxes is left
  or the best sequence's score sum is below 0.01 (their `MAX_THRESH`). Boxes that no
  sequence took and none suppressed are kept with their own scores (track id -1):
  FGFA's test code then runs a per-frame NMS at 0.3 (`imagenet_vid.py`), which is not
  part of this function. A sequence's average is its DP sum divided by its length.
- `"exhaustive"`: this project's earlier Seq-NMS: continuous IoU (no +1), links at
  IoU > 0.5, no score floor, and it goes on until every box is in a sequence or
  suppressed (unlinked boxes end up as one-frame sequences: per-frame NMS on the
  leftovers), so every kept box has a track id.

Both share the DP and its tie rules, made explicit (FGFA's loops give the same): a box
extends the best sequence ending at a linked box of the previous frame when that makes
its sum larger than its own score (`prev + s > s`); among predecessors with the same sum
the lowest box index wins; among sequences with the same sum, the one ending in the
earliest frame, then at the lowest box index (FGFA's row-major `argmax`). Box indices are
the positions of the class's boxes in the input frame, in input order.

Box format: `xmin, ymin, xmax, ymax`, in pixels like `stmn_tf.evaluation.vid_eval`.

Speed: the DP is kept between iterations; removing a sequence that spans frames
[t0, t1] only changes the DP from t0 on, and only as long as the values keep changing.
"""

import numpy as np

SEQ_NMS_VARIANTS = ("fgfa", "exhaustive")
# FGFA's MAX_THRESH: a class stops when its best sequence's score sum is below this.
FGFA_MIN_SCORE_SUM = 1e-2


def iou_matrix_xyxy(boxes_a, boxes_b, pixel_offset=0.0):
    """Pairwise IoU `[N, M]` of `[N, 4]` and `[M, 4]` xmin, ymin, xmax, ymax boxes.

    `pixel_offset=1` is the devkit's inclusive-pixel convention (widths `xmax - xmin + 1`,
    intersections likewise), computed in the order of FGFA's `seq_nms.py` so that the
    comparisons with 0.5 and 0.3 come out the same; 0 is the continuous IoU.
    """
    a = np.asarray(boxes_a, np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, np.float64).reshape(-1, 4)
    iw = np.maximum(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
                    + pixel_offset, 0.0)
    ih = np.maximum(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
                    + pixel_offset, 0.0)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0] + pixel_offset) * (a[:, 3] - a[:, 1] + pixel_offset)
    area_b = (b[:, 2] - b[:, 0] + pixel_offset) * (b[:, 3] - b[:, 1] + pixel_offset)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def nms_xyxy(boxes, scores, iou_threshold):
    """Greedy NMS. Returns the kept indices `[K]`, by decreasing score (ties: index)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.lexsort((np.arange(len(scores)), -scores))
    if len(order) == 0:
        return order
    iou = iou_matrix_xyxy(np.asarray(boxes)[order], np.asarray(boxes)[order])
    alive = np.ones(len(order), bool)
    keep = []
    for i in range(len(order)):
        if alive[i]:
            keep.append(i)
            alive &= iou[i] < iou_threshold
    return order[np.asarray(keep, np.int64)]


def split_by_class(frames):
    """Per-frame dicts -> {class: (list per frame of input indices of that class)}."""
    by_class = {}
    for t, frame in enumerate(frames):
        labels = np.asarray(frame["labels"], np.int64).reshape(-1)
        for c in np.unique(labels):
            by_class.setdefault(int(c), [np.zeros(0, np.int64)] * len(frames))
            by_class[int(c)][t] = np.flatnonzero(labels == c)
    return by_class


def assemble_frames(frames, kept, scores, track_ids):
    """Builds the output dicts from per-frame lists of kept input indices."""
    out = []
    for t, frame in enumerate(frames):
        idx = np.concatenate(kept[t]).astype(np.int64) if kept[t] else np.zeros(0, np.int64)
        new_scores = np.concatenate(scores[t]) if scores[t] else np.zeros(0)
        tracks = np.concatenate(track_ids[t]).astype(np.int64) if track_ids[t] else np.zeros(0, np.int64)
        order = np.lexsort((idx, -new_scores))
        idx, new_scores, tracks = idx[order], new_scores[order], tracks[order]
        boxes = np.asarray(frame["boxes"], np.float64).reshape(-1, 4)
        labels = np.asarray(frame["labels"], np.int64).reshape(-1)
        out.append({"boxes": boxes[idx], "scores": new_scores, "labels": labels[idx],
                    "track_ids": tracks, "indices": idx})
    return out


class _SeqNMSClass:
    """Seq-NMS state for one class of one video."""

    def __init__(self, boxes, scores, link_iou_threshold, link_inclusive, pixel_offset):
        self.boxes = boxes  # list over frames of [n_t, 4]
        self.scores = scores  # list over frames of [n_t]
        self.pixel_offset = pixel_offset
        self.num_frames = len(boxes)
        self.alive = [np.ones(len(s), bool) for s in scores]
        # links[t]: (src in frame t, dst in frame t+1) with IoU reaching the threshold.
        self.links = []
        for t in range(self.num_frames - 1):
            if len(scores[t]) and len(scores[t + 1]):
                iou = iou_matrix_xyxy(boxes[t], boxes[t + 1], pixel_offset)
                src, dst = np.nonzero(iou >= link_iou_threshold if link_inclusive
                                      else iou > link_iou_threshold)
            else:
                src = dst = np.zeros(0, np.int64)
            self.links.append((src, dst))
        # Links between two live boxes (FGFA's sum_links).
        self.live_links = sum(len(src) for src, _ in self.links)
        self.best = [None] * self.num_frames  # DP: best sum of a sequence ending at a box
        self.pred = [None] * self.num_frames  # its previous box, -1 if it starts here
        self.frame_max = np.full(self.num_frames, -np.inf)
        self._update_from(0, -1)

    def _step(self, t):
        score = np.where(self.alive[t], self.scores[t], -np.inf)
        pred = np.full(len(score), -1, np.int64)
        if t > 0 and len(score):
            src, dst = self.links[t - 1]
            live = self.alive[t - 1][src] & self.alive[t][dst]
            src, dst = src[live], dst[live]
            if len(src):
                # FGFA compares the sums prev + s, not prev: the same up to rounding, and
                # then its first (lowest) predecessor wins among equal sums.
                candidate = self.best[t - 1][src] + score[dst]
                incoming = np.full(len(score), -np.inf)
                np.maximum.at(incoming, dst, candidate)
                is_best = candidate == incoming[dst]
                first = np.full(len(score), np.iinfo(np.int64).max)
                np.minimum.at(first, dst[is_best], src[is_best])
                # A sequence only grows through a prefix that adds to it (Han et al.).
                grow = incoming > score
                pred[grow] = first[grow]
                score = np.where(grow, incoming, score)
        return score, pred

    def _update_from(self, t0, t1):
        for t in range(t0, self.num_frames):
            best, pred = self._step(t)
            unchanged = (t > t1 and self.best[t] is not None and np.array_equal(best, self.best[t])
                         and np.array_equal(pred, self.pred[t]))
            self.best[t], self.pred[t] = best, pred
            self.frame_max[t] = best.max() if len(best) else -np.inf
            if unchanged:
                # Alive boxes changed only in [t0, t1]: identical DP here means identical after.
                break

    def best_sequence(self):
        """(sum, last frame, box index) of the best live sequence, or None if no box is live."""
        t = int(np.argmax(self.frame_max))  # ties: the earliest frame
        if not np.isfinite(self.frame_max[t]):
            return None
        j = int(np.argmax(self.best[t]))  # ties: the lowest index
        return float(self.best[t][j]), t, j

    def pop_sequence(self, t, j, nms_threshold):
        """Takes the sequence ending at box j of frame t: (first frame, [box per frame]).

        Its boxes and those they suppress leave the search, with their links.
        """
        path = [j]
        while self.pred[t - len(path) + 1][path[-1]] >= 0:
            path.append(int(self.pred[t - len(path) + 1][path[-1]]))
        path.reverse()
        t0 = t - len(path) + 1
        for k, j in enumerate(path):
            frame = t0 + k
            overlap = iou_matrix_xyxy(self.boxes[frame][j:j + 1], self.boxes[frame], self.pixel_offset)[0]
            removed = self.alive[frame] & (overlap >= nms_threshold)
            removed[j] = True
            # Frame by frame, so a link between two removed boxes is counted once.
            if frame > 0:
                src, dst = self.links[frame - 1]
                self.live_links -= int(np.sum(self.alive[frame - 1][src] & removed[dst]))
            if frame < self.num_frames - 1:
                src, dst = self.links[frame]
                self.live_links -= int(np.sum(removed[src] & self.alive[frame + 1][dst]))
            self.alive[frame] &= ~removed
        self._update_from(t0, t)
        return t0, path


def seq_nms_xyxy(frames, link_iou_threshold=0.5, nms_threshold=0.3, rescore="avg", variant="fgfa"):
    """Seq-NMS over one video's per-frame detections, per class.

    Args:
        frames: list (one per frame, in time order) of dicts: `"boxes"` `[N, 4]`
            xmin, ymin, xmax, ymax pixels; `"scores"` `[N]`; `"labels"` `[N]`.
        link_iou_threshold: boxes of adjacent frames are linked when their IoU reaches
            this (`>=`; `>` in the `"exhaustive"` variant). Defaults to 0.5.
        nms_threshold: boxes of a sequence's frames with IoU >= this with its box are
            suppressed. Defaults to 0.3 (as FGFA's Seq-NMS).
        rescore: `"avg"` or `"max"`: the score every box of a sequence gets.
            Defaults to `"avg"` (FGFA's).
        variant: `"fgfa"` or `"exhaustive"`, see the module docstring. Defaults to
            `"fgfa"`.

    Returns:
        List (one per frame) of dicts: `"boxes"` `[K, 4]`, `"scores"` `[K]` (rescored),
        `"labels"` `[K]`, `"track_ids"` `[K]` (one id per sequence, unique in the video,
        one-frame sequences included; -1 for boxes that no sequence took, `"fgfa"`
        only), `"indices"` `[K]` (the kept boxes' indices in the input frame); sorted
        by decreasing score (ties: input index). Suppressed boxes are dropped.
    """
    if rescore not in ("avg", "max"):
        raise ValueError(f"rescore must be 'avg' or 'max', got {rescore!r}")
    if variant not in SEQ_NMS_VARIANTS:
        raise ValueError(f"variant must be one of {SEQ_NMS_VARIANTS}, got {variant!r}")
    fgfa = variant == "fgfa"
    kept = [[] for _ in frames]
    new_scores = [[] for _ in frames]
    tracks = [[] for _ in frames]
    next_track = 0
    for _, members in sorted(split_by_class(frames).items()):
        boxes = [np.asarray(f["boxes"], np.float64).reshape(-1, 4)[m] for f, m in zip(frames, members)]
        scores = [np.asarray(f["scores"], np.float64).reshape(-1)[m] for f, m in zip(frames, members)]
        state = _SeqNMSClass(boxes, scores, link_iou_threshold, link_inclusive=fgfa,
                             pixel_offset=1.0 if fgfa else 0.0)
        while True:
            found = state.best_sequence()
            if found is None:
                break
            total, t, j = found
            # FGFA's maxPath loop: stop at its score floor or when no link is left.
            if fgfa and (total < FGFA_MIN_SCORE_SUM or state.live_links == 0):
                break
            t0, path = state.pop_sequence(t, j, nms_threshold)
            seq_scores = np.asarray([scores[t0 + k][j] for k, j in enumerate(path)])
            value = total / len(path) if rescore == "avg" else seq_scores.max()
            for k, j in enumerate(path):
                kept[t0 + k].append(members[t0 + k][j:j + 1])
                new_scores[t0 + k].append(np.asarray([value]))
                tracks[t0 + k].append(np.asarray([next_track]))
            next_track += 1
        if fgfa:
            # Boxes that no sequence took and none suppressed keep their scores.
            for t, alive in enumerate(state.alive):
                rest = np.flatnonzero(alive)
                if len(rest):
                    kept[t].append(members[t][rest])
                    new_scores[t].append(scores[t][rest])
                    tracks[t].append(np.full(len(rest), -1, np.int64))
    return assemble_frames(frames, kept, new_scores, tracks)
