"""COCO-style AP of per-frame detections through pycocotools (the field's reference).

Same inputs as `vid_eval.evaluate`. Boxes are pixel `xmin, ymin, xmax, ymax`; COCO's
boxes are `x, y, width, height` with `width = xmax - xmin` (COCO has no +1 pixel
convention, unlike the VID devkit), every frame is one COCO image, and class c is COCO
category c. COCO keeps the `max_detections` highest-scoring detections of each image
(100 by default, as COCO's own evaluation).
"""

import contextlib
import io

import numpy as np

_STAT_NAMES = ("coco_AP", "coco_AP50", "coco_AP75", "coco_AP_small", "coco_AP_medium",
               "coco_AP_large")


def _to_coco(groundtruths, detections, num_classes):
    images, annotations, results = [], [], []
    for image_id, (gt, det) in enumerate(zip(groundtruths, detections), start=1):
        images.append({"id": image_id})
        boxes = np.asarray(gt["boxes"], np.float64).reshape(-1, 4)
        labels = np.asarray(gt["labels"], np.int64).reshape(-1)
        for box, label in zip(boxes, labels):
            w, h = box[2] - box[0], box[3] - box[1]
            # Annotation ids start at 1: COCOeval treats a matched id of 0 as unmatched.
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(label), "bbox": [box[0], box[1], w, h],
                                "area": float(w * h), "iscrowd": 0})
        boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)
        for box, label, score in zip(boxes, np.asarray(det["labels"]).reshape(-1),
                                     np.asarray(det["scores"]).reshape(-1)):
            results.append({"image_id": image_id, "category_id": int(label),
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                            "score": float(score)})
    categories = [{"id": c, "name": str(c)} for c in range(1, num_classes + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def evaluate_coco(groundtruths, detections, num_classes, max_detections=100):
    """COCO AP (IoU 0.5:0.95), AP50, AP75 and AP by object size, plus per-class AP50.

    Args:
        groundtruths: per-frame dicts, `"boxes"` `[N, 4]` pixel xyxy and `"labels"` 1..C.
        detections: per-frame dicts, `"boxes"` `[D, 4]` pixel xyxy, `"scores"`, `"labels"`.
        num_classes: C.
        max_detections: per-image limit (COCO's maxDets). Defaults to 100.

    Returns:
        dict with `"coco_AP"`, `"coco_AP50"`, `"coco_AP75"`, `"coco_AP_small"`,
        `"coco_AP_medium"`, `"coco_AP_large"` (floats; pycocotools' -1 for "no ground
        truth" is returned as NaN) and `"coco_AP50_per_class"` {class: float}.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, results = _to_coco(groundtruths, detections, num_classes)
    nan_result = {name: float("nan") for name in _STAT_NAMES}
    nan_result["coco_AP50_per_class"] = {c: float("nan") for c in range(1, num_classes + 1)}
    if not dataset["annotations"]:
        return nan_result
    if not results:
        zero = {name: 0.0 for name in _STAT_NAMES}
        zero["coco_AP50_per_class"] = {
            c: (0.0 if any(a["category_id"] == c for a in dataset["annotations"]) else float("nan"))
            for c in range(1, num_classes + 1)}
        return zero

    # pycocotools prints progress on stdout; keep the caller's output clean.
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.maxDets = [1, 10, int(max_detections)]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(s) if s >= 0 else float("nan") for s in evaluator.stats[:6]]
    out = dict(zip(_STAT_NAMES, stats))

    # precision: [iou thresholds, recall points, categories, area ranges, max dets].
    precision = evaluator.eval["precision"][0, :, :, 0, -1]
    per_class = {}
    for k, category in enumerate(evaluator.params.catIds):
        p = precision[:, k]
        per_class[int(category)] = float(np.mean(p)) if np.all(p > -1) else float("nan")
    out["coco_AP50_per_class"] = per_class
    return out
