"""The ensemble of the paper (Sec. 4): per frame, the union of the static R-FCN's and
STMN's detections, before temporal linking. NumPy only.
"""

import numpy as np

from stmn_tf.ops.seq_nms import nms_xyxy


def ensemble_detections_xyxy(*detectors, nms_threshold=None):
    """Per-frame union of several detectors' detections.

    Args:
        *detectors: two or more lists (one entry per frame, same frames) of dicts:
            `"boxes"` `[N, 4]` xmin, ymin, xmax, ymax pixels; `"scores"` `[N]`;
            `"labels"` `[N]`.
        nms_threshold: if given, greedy NMS per frame and class on the union (IoU >=
            threshold suppresses). Defaults to None: the plain union, as the paper,
            leaving duplicates to the linker.

    Returns:
        List (one per frame) of dicts `"boxes"` `[K, 4]`, `"scores"` `[K]`, `"labels"`
        `[K]`, `"sources"` `[K]` (which detector each box came from, 0-based); by
        decreasing score.
    """
    if len(detectors) < 2:
        raise ValueError(f"need at least two detectors' detections, got {len(detectors)}")
    lengths = {len(d) for d in detectors}
    if len(lengths) != 1:
        raise ValueError(f"all detectors must cover the same frames, got lengths {sorted(lengths)}")
    out = []
    for frames in zip(*detectors):
        boxes = np.concatenate([np.asarray(f["boxes"], np.float64).reshape(-1, 4) for f in frames])
        scores = np.concatenate([np.asarray(f["scores"], np.float64).reshape(-1) for f in frames])
        labels = np.concatenate([np.asarray(f["labels"], np.int64).reshape(-1) for f in frames])
        sources = np.concatenate([np.full(len(np.asarray(f["scores"]).reshape(-1)), k, np.int64)
                                  for k, f in enumerate(frames)])
        if nms_threshold is None:
            keep = np.lexsort((np.arange(len(scores)), -scores))
        else:
            keep = np.concatenate([np.flatnonzero(labels == c)[
                nms_xyxy(boxes[labels == c], scores[labels == c], nms_threshold)]
                for c in np.unique(labels)]) if len(labels) else np.zeros(0, np.int64)
            keep = keep[np.lexsort((keep, -scores[keep]))]
        out.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep],
                    "sources": sources[keep]})
    return out
