"""evaluate.py's logic: detectors over the eval split, linking, ensemble, VID metrics.

Methods scored (each a column of the table), when the inputs allow:

- `rfcn`: the static R-FCN, per frame (needs a static checkpoint; or the main
  checkpoint when the experiment's model is an R-FCN);
- `stmn`: STMN with the sliding windows (`stmn_tf.inference.video`), each frame's
  window detections merged by per-class NMS;
- `stmn+<linking>`: the same, linked per video (Seq-NMS or the Viterbi tube linker);
- `ensemble+<linking>`: the per-frame union of the R-FCN's and STMN's detections,
  then linked (the paper's final entry; `eval.ensemble` in the config).

With `linking="none"` the linked columns are left out and the ensemble is unlinked.
The eval split is read with the eval-mode pipeline (every frame of every video in
order); all detectors see the same frames, pushed to their runners one at a time.
"""

import copy
import math

import numpy as np

from stmn_tf.evaluation import vid_eval
from stmn_tf.ops import box_ops
from stmn_tf.inference import postprocess
from stmn_tf.inference.video import prepared_frame

TABLE_METRICS = ("mAP", "mAP_slow", "mAP_medium", "mAP_fast", "coco_AP", "coco_AP50")


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def eval_frames(data_config, max_videos=None):
    """Yields `(video_id, PreparedFrame with ground truth in "meta")` from the eval split.

    Ground truth: `meta["groundtruth"]` with `"boxes"` pixel xyxy in the original
    frame, `"labels"`, `"track_ids"`, `"video_id"`, `"frame_index"`.
    """
    from stmn_tf.data import pipeline

    config = copy.deepcopy(data_config)
    config.override({"is_training": False, "global_batch_size": 0}, is_strict=True)
    videos, current = 0, None
    for element in pipeline.iterate(pipeline.build_dataset(config), config, numpy=True):
        video_id = _text(element["video_id"])
        if video_id != current or element["frame_position"] == 0:
            if max_videos is not None and videos >= max_videos:
                return
            videos += 1
            current = video_id
        n = int(element["num_boxes"])
        height, width = (int(s) for s in element["original_size"])
        boxes = box_ops.normalized_yxyx_to_pixel_xyxy(element["boxes"][:n], height, width)
        groundtruth = {"boxes": boxes, "labels": element["labels"][:n].astype(np.int64),
                       "track_ids": element["track_ids"][:n].astype(np.int64),
                       "video_id": video_id, "frame_index": int(element["frame_index"])}
        yield video_id, prepared_frame(element["images"], element["image_size"],
                                       element["original_size"], element["frame_index"],
                                       groundtruth=groundtruth)


def _restore(config, checkpoint, model_type=None):
    from stmn_tf.training import checkpointing

    config = copy.deepcopy(config)
    if model_type:
        config.model.type = model_type
    return checkpointing.restore_model(config, checkpoint)[0]


def evaluate_detectors(config, model=None, static_model=None, *, data=None, window=None,
                       stride=None, step=None, linking=None, batch_windows=None, merge=None,
                       online=False, max_videos=None, progress=True, keep_frames=False):
    """Runs the detectors over the eval split and scores every method.

    Args:
        config: `ExperimentConfig` (its `eval_data`, `eval` and `model.num_classes`).
        model: the main detector (STMN, or an R-FCN).
        static_model: optional R-FCN for the `rfcn` and ensemble methods.
        data: file pattern overriding `config.eval_data.input_path`.
        window, stride, step, linking, batch_windows, merge: override `config.eval`
            (`merge`: its `window_merge`).
        online: the forward-only online runner instead of the windows.
        max_videos: evaluate the first N videos only.
        progress: show a tqdm progress bar.
        keep_frames: also return `"groundtruths"` (per-frame dicts) and `"detections"`
            ({method: per-frame dicts}), e.g. to write a devkit detection file.

    Returns:
        dict: `"methods"` {method: `vid_eval.evaluate` result}; `"class_names"`;
        `"num_videos"`, `"num_frames"`; `"settings"` (window, stride, step, linking,
        online).
    """
    eval_config = config.eval
    linking = linking or eval_config.linking
    if linking not in postprocess.LINKING_CHOICES:
        raise ValueError(f"linking must be one of {postprocess.LINKING_CHOICES}, got {linking!r}")
    data_config = copy.deepcopy(config.eval_data)
    if data:
        data_config.input_path = data
    runners = {}
    main_name = "stmn" if model.has_memory else "rfcn"
    if static_model is not None and main_name == "stmn":
        runners["rfcn"] = postprocess.make_runner(static_model, eval_config)
    runners[main_name] = postprocess.make_runner(model, eval_config, online, window, stride,
                                                 step, batch_windows, merge)
    ensemble = "rfcn" in runners and main_name == "stmn" and eval_config.ensemble
    suffix = "" if linking == "none" else "+" + linking

    groundtruths, detections = [], {}
    video = {name: [] for name in runners}
    frames_seen, videos_seen = 0, 0

    def end_video():
        outputs = {name: video[name] + list(runner.finish()) for name, runner in runners.items()}
        for frame in outputs[main_name]:
            groundtruths.append(frame["meta"]["groundtruth"])
        for name, frames in outputs.items():
            detections.setdefault(name, []).extend(frames)
        if linking != "none":
            detections.setdefault(main_name + suffix, []).extend(
                postprocess.link_video(outputs[main_name], linking))
        if ensemble:
            union = postprocess.ensemble_video(outputs["rfcn"], outputs["stmn"])
            detections.setdefault("ensemble" + suffix, []).extend(
                postprocess.link_video(union, linking))
        for name in video:
            video[name] = []

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc="evaluate", unit="frame", total=None, leave=False)
    current = None
    for video_id, frame in eval_frames(data_config, max_videos):
        if video_id != current and current is not None:
            end_video()
        if video_id != current:
            videos_seen += 1
            current = video_id
        for name, runner in runners.items():
            video[name].extend(runner.push(frame))
        frames_seen += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(videos=videos_seen)
    if current is not None:
        end_video()
    if bar is not None:
        bar.close()
    if not groundtruths:
        raise ValueError(f"no frames in {data_config.input_path}")

    num_classes = config.model.num_classes
    methods = {name: vid_eval.evaluate(groundtruths, frames, num_classes)
               for name, frames in detections.items()}
    frames = {"groundtruths": groundtruths, "detections": detections} if keep_frames else {}
    return {
        **frames,
        "methods": methods,
        "class_names": list(postprocess.class_names(config)),
        "num_videos": videos_seen,
        "num_frames": frames_seen,
        "settings": {"window": window or eval_config.window, "stride": stride or eval_config.stride,
                     "step": step or eval_config.window_step, "linking": linking,
                     "merge": merge or eval_config.window_merge,
                     "online": bool(online)},
    }


def evaluate_checkpoints(config, checkpoint, static_checkpoint=None, **kwargs):
    """`evaluate_detectors` with the models restored from checkpoints (directories or
    prefixes). The static R-FCN is built from `config.model` with type `rfcn`."""
    model = _restore(config, checkpoint)
    static_model = _restore(config, static_checkpoint, "rfcn") if static_checkpoint else None
    return evaluate_detectors(config, model, static_model, **kwargs)


def _percent(value):
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def format_table(results):
    """The per-class and overall table (AP in %, "-" where a class has no ground truth)."""
    methods = list(results["methods"])
    names = results["class_names"]
    rows = [[name] + [_percent(results["methods"][m]["AP"].get(c)) for m in methods]
            for c, name in enumerate(names, start=1)]
    rows.append(None)
    for metric in TABLE_METRICS:
        if all(metric in results["methods"][m] for m in methods):
            rows.append([metric] + [_percent(results["methods"][m][metric]) for m in methods])
    header = ["class"] + methods
    widths = [max(len(str(r[i])) for r in [header] + [r for r in rows if r]) for i in range(len(header))]

    def line(cells):
        return "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    out = [line(header), rule] + [line(r) if r else rule for r in rows]
    return "\n".join(out)


def to_json(value):
    """Metrics -> JSON-ready: NaN -> None, NumPy scalars -> floats, int keys -> str."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return None if math.isnan(value) else value
    if isinstance(value, np.integer):
        return int(value)
    return value
