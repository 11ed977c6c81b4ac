"""What evaluate.py and detect.py do after the runners: temporal linking of one video's
detections, the R-FCN ensemble, class names, and building runners from a config.

Class names (`class_names(config)`), by the first rule that applies:

1. the experiment uses the synthetic data (`synthetic_data_dir` set) and its
   `train_data.synthetic.num_classes` equals the model's C: the synthetic names
   (`stmn_tf.data.synthetic.class_names`);
2. C = 30: the ImageNet VID names in the devkit's order (`stmn_tf.data.vid_classes`);
3. otherwise `class_1` .. `class_C`.
"""

from stmn_tf.inference.ensemble import ensemble_detections_xyxy
from stmn_tf.inference.video import OnlineVideoDetector
from stmn_tf.inference.video import WindowedVideoDetector
from stmn_tf.ops.seq_nms import seq_nms_xyxy
from stmn_tf.ops.tube_linking import viterbi_link_xyxy

LINKERS = {"seq_nms": seq_nms_xyxy, "viterbi": viterbi_link_xyxy}
LINKING_CHOICES = tuple(LINKERS) + ("none",)


def link_video(frames, method):
    """Links one video's per-frame detections (`FrameDetections` or plain dicts).

    Returns:
        New per-frame dicts `"boxes"`, `"scores"`, `"labels"`, `"track_ids"` (rescored,
        suppressed boxes dropped); with `method="none"` the frames unchanged (no track ids).
    """
    if method == "none":
        return frames
    if method not in LINKERS:
        raise ValueError(f"linking must be one of {LINKING_CHOICES}, got {method!r}")
    linked = LINKERS[method](frames)
    out = []
    for frame, result in zip(frames, linked):
        result = dict(result)
        result.pop("indices", None)
        out.append({**{k: v for k, v in frame.items() if k not in ("boxes", "scores", "labels")},
                    **result})
    return out


def ensemble_video(static_frames, memory_frames):
    """The paper's ensemble: per frame the union of the static R-FCN's and STMN's boxes."""
    merged = ensemble_detections_xyxy(static_frames, memory_frames)
    return [{**memory, **union} for memory, union in zip(memory_frames, merged)]


def class_names(config):
    """Names of labels 1..C (module docstring), as a tuple of C strings."""
    num_classes = config.model.num_classes
    if config.synthetic_data_dir:
        from stmn_tf.data import synthetic

        synthetic_config = config.train_data.synthetic
        if synthetic_config.num_classes == num_classes:
            return tuple(synthetic.class_names(synthetic_config))
    from stmn_tf.data import vid_classes

    if num_classes == vid_classes.NUM_VID_CLASSES:
        return tuple(vid_classes.VID_CLASS_NAMES)
    return tuple(f"class_{i}" for i in range(1, num_classes + 1))


def make_runner(model, eval_config, online=False, window=None, stride=None, step=None,
                batch_windows=None, merge=None):
    """A runner for `model` with the test schedule of `eval_config` (an `EvalConfig`),
    each value overridable; a static R-FCN gets per-frame detection."""
    window = window or eval_config.window
    stride = stride or eval_config.stride
    if online:
        return OnlineVideoDetector(model, stride=stride if model.has_memory else 1)
    return WindowedVideoDetector(model, window_length=window, stride=stride,
                                 step=step or eval_config.window_step,
                                 batch_windows=batch_windows or eval_config.batch_windows,
                                 merge_iou=getattr(model, "nms_iou", 0.3),
                                 merge=merge or eval_config.window_merge)
