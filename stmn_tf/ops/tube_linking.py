"""The D&T-style Viterbi tube linker that the STMN authors' code used, NumPy only.

Feichtenhofer et al. ("Detect to Track and Track to Detect", ICCV 2017) link the
detections of one class across a video by Viterbi: the score of a link between box i of
frame t and box j of the next frame is `s_i + s_j + bonus * [the two boxes belong to one
track]`; the best-scoring path through all frames is taken, its boxes are removed, and
this repeats (K paths) until some frame has no box left. Each tube's boxes are then
rescored by adding the mean of the tube's top scores.

What the STMN authors ran (`external/dp`, `make_tubes.m` / `zero_jump_link.m` /
`rfcn_test_vid_preload_det.m` of their release), and what this follows:

- Per class, per frame: NMS at 0.4, keep the best 25.
- Frames without any box of the class are skipped: paths run over the other frames.
- Their "tracks" are the detections themselves (no motion prediction), so the link
  bonus (1) is given when the boxes of adjacent frames overlap with IoU >= 0.5 (their
  `round(IoU)`). They also linked through a third box of frame t overlapping both; we
  use the direct IoU.
- A path's box score becomes `score + 2 * mean(top 50% of the path's scores)`.
- Boxes left over when the loop stops keep their scores and get track id -1.
- Not done: their box voting in the per-frame NMS.
- Ties (deterministic, like MATLAB's `max`, which returns the first maximum): a frame's
  boxes are in NMS order (decreasing score, then input index); among equally good next
  boxes, and among equally good starts, the first in that order wins (NumPy's `argmax`
  returns the first maximum).

Box format: `xmin, ymin, xmax, ymax`, in pixels like `stmn_tf.evaluation.vid_eval`
(IoU is the continuous one, so any consistent scale works).

All classes are linked together: each class's frames are padded to a common length and
box count, so one Viterbi step is one NumPy operation over `[classes, K, K]`.
"""

import numpy as np

from stmn_tf.ops.seq_nms import assemble_frames
from stmn_tf.ops.seq_nms import iou_matrix_xyxy
from stmn_tf.ops.seq_nms import nms_xyxy
from stmn_tf.ops.seq_nms import split_by_class


def viterbi_link_xyxy(frames, nms_threshold=0.4, max_per_frame=25, link_iou_threshold=0.5,
                      link_bonus=1.0, top_fraction=0.5, rescore_weight=2.0):
    """Links one video's per-frame detections into tubes per class and rescores them.

    Args:
        frames: list (one per frame, in time order) of dicts: `"boxes"` `[N, 4]`
            xmin, ymin, xmax, ymax pixels; `"scores"` `[N]`; `"labels"` `[N]`.
        nms_threshold: per-frame, per-class NMS before linking; None to skip.
            Defaults to 0.4.
        max_per_frame: boxes kept per frame and class after the NMS; None: all.
            Defaults to 25.
        link_iou_threshold: adjacent boxes with IoU >= this get the link bonus.
            Defaults to 0.5.
        link_bonus: added to a link's score `s_i + s_j`. Defaults to 1.0.
        top_fraction: the fraction of a tube's highest scores that are averaged.
            Defaults to 0.5.
        rescore_weight: a tube box's score becomes `s + rescore_weight * mean`.
            Defaults to 2.0.

    Returns:
        List (one per frame) of dicts: `"boxes"` `[K, 4]`, `"scores"` `[K]`, `"labels"`
        `[K]`, `"track_ids"` `[K]` (tube id, unique in the video; -1 for boxes in no
        tube), `"indices"` `[K]` (indices in the input frame); by decreasing score.
        Boxes removed by the NMS or the per-frame cap are dropped.
    """
    classes = sorted(split_by_class(frames).items())
    kept = [[] for _ in frames]
    new_scores = [[] for _ in frames]
    tracks = [[] for _ in frames]
    if not classes:
        return assemble_frames(frames, kept, new_scores, tracks)

    # Per class: the frames that have boxes (its chain), and their boxes after NMS.
    chains = []
    for _, members in classes:
        chain = []
        for t, (frame, m) in enumerate(zip(frames, members)):
            if len(m) == 0:
                continue
            boxes = np.asarray(frame["boxes"], np.float64).reshape(-1, 4)[m]
            scores = np.asarray(frame["scores"], np.float64).reshape(-1)[m]
            order = (nms_xyxy(boxes, scores, nms_threshold) if nms_threshold is not None
                     else np.lexsort((np.arange(len(scores)), -scores)))
            if max_per_frame is not None:
                order = order[:max_per_frame]
            chain.append((t, m[order], boxes[order], scores[order]))
        chains.append(chain)

    num_classes = len(chains)
    length = max(len(c) for c in chains)
    width = max(len(entry[2]) for c in chains for entry in c)
    # Padded: score -inf for missing boxes; positions past a chain's end are "dummy"
    # frames with one box of score 0 whose links are worth 0 (they change no path).
    scores = np.full((num_classes, length, width), -np.inf)
    real = np.zeros((num_classes, length), bool)
    for c, chain in enumerate(chains):
        for p, (_, _, _, s) in enumerate(chain):
            scores[c, p, :len(s)] = s
            real[c, p] = True
        scores[c, len(chain):, 0] = 0.0
    # edges[c, p, i, j]: link from box i at chain position p to box j at p + 1.
    edges = np.zeros((num_classes, max(length - 1, 0), width, width))
    for c, chain in enumerate(chains):
        for p in range(len(chain) - 1):
            b0, b1 = chain[p][2], chain[p + 1][2]
            s0, s1 = chain[p][3], chain[p + 1][3]
            linked = iou_matrix_xyxy(b0, b1) >= link_iou_threshold
            edges[c, p, :len(s0), :len(s1)] = s0[:, None] + s1[None, :] + link_bonus * linked
    alive = np.isfinite(scores)
    active = real[:, 0].copy()  # classes still producing tubes
    next_track = 0
    while active.any():
        # Viterbi backwards, as zero_jump_link: value[p, i] = best path sum from (p, i).
        value = np.where(alive[:, -1], 0.0, -np.inf)  # [C, K]
        choice = np.zeros((num_classes, max(length - 1, 0), width), np.int64)
        for p in range(length - 2, -1, -1):
            total = edges[:, p] + value[:, None, :]  # [C, K, K]
            total = np.where(alive[:, p + 1][:, None, :], total, -np.inf)
            choice[:, p] = np.argmax(total, axis=2)
            value = np.take_along_axis(total, choice[:, p][:, :, None], axis=2)[:, :, 0]
            value = np.where(alive[:, p], value, -np.inf)
        start = np.argmax(value, axis=1)  # ties: the lower index, i.e. the higher score
        path = np.zeros((num_classes, length), np.int64)
        path[:, 0] = start
        for p in range(length - 1):
            path[:, p + 1] = choice[np.arange(num_classes), p, path[:, p]]
        for c in np.flatnonzero(active):
            chain = chains[c]
            idx = path[c, :len(chain)]
            tube = scores[c, np.arange(len(chain)), idx]
            top = np.sort(tube)[::-1][: int(np.ceil(len(tube) * top_fraction))]
            boost = rescore_weight * top.mean()
            for p, (t, members, _, _) in enumerate(chain):
                kept[t].append(members[idx[p]:idx[p] + 1])
                new_scores[t].append(np.asarray([tube[p] + boost]))
                tracks[t].append(np.asarray([next_track]))
            next_track += 1
            alive[c, np.arange(len(chain)), idx] = False
            # zero_jump_link stops as soon as one frame of the chain is empty.
            if not alive[c, :len(chain)].any(axis=1).all():
                active[c] = False
        alive[~active] = False
        # Finished classes keep their dummy box so the padded DP stays well defined.
        alive[~active, :, 0] = True
        edges[~active] = 0.0

    # Boxes in no tube keep their score.
    taken = [set() for _ in frames]
    for t in range(len(frames)):
        for m in kept[t]:
            taken[t].update(m.tolist())
    for chain in chains:
        for t, members, _, s in chain:
            rest = np.asarray([k for k, i in enumerate(members) if i not in taken[t]], np.int64)
            if len(rest):
                kept[t].append(members[rest])
                new_scores[t].append(s[rest])
                tracks[t].append(np.full(len(rest), -1))
    return assemble_frames(frames, kept, new_scores, tracks)
