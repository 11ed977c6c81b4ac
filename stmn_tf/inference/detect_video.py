"""detect.py's logic: a video file or a folder of frames -> detections JSON, an
annotated mp4 and (STMN) the memory saliency strip of the paper's Fig. 4.

The frames are decoded twice: once streamed through the runner (bounded memory, see
`stmn_tf.inference.video`), then, after linking over the whole video has fixed every
score and track id, once more to draw the boxes. The saliency strip uses the first
sub-sequence's first T frames (frames 0, stride, 2 * stride, ...: a clip as STMN sees
it), kept aside during the first pass; its maps share one colour scale.

JSON (`detections.json`):

    {"source": path, "num_frames": frames read, "skipped_frames": [indices of corrupt
     frames], "frame_size": [H, W], "model": "stmn" | "rfcn", "window", "stride",
     "linking", "online", "class_names": [...],
     "frames": [{"frame_index": i, "detections": [{"box": [xmin, ymin, xmax, ymax]
                 (pixels), "label": 1..C, "class": name, "score": s,
                 "track_id": id (when linked)}, ...]}, ...]}
"""

import json
import os

import cv2
import numpy as np

from stmn_tf.inference import postprocess
from stmn_tf.inference.frames import FrameResizer
from stmn_tf.inference.frames import FrameSourceError
from stmn_tf.inference.frames import open_frame_source
from stmn_tf.inference.video import prepared_frame

__all__ = ["FrameSourceError", "detect_video", "draw_detections", "saliency_strip"]


def draw_detections(image_bgr, frame, class_names, min_score):
    """Draws boxes with class names and scores (and track ids) on a BGR frame, in place."""
    height, width = image_bgr.shape[:2]
    thickness = max(1, round(min(height, width) / 360))
    scale = max(0.4, min(height, width) / 900)
    track_ids = frame.get("track_ids")
    for i, (box, score, label) in enumerate(zip(frame["boxes"], frame["scores"], frame["labels"])):
        if score < min_score:
            continue
        colour = tuple(int(c) for c in cv2.applyColorMap(
            np.uint8([[(int(label) * 67) % 256]]), cv2.COLORMAP_HSV)[0, 0])
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        cv2.rectangle(image_bgr, (x0, y0), (x1, y1), colour, thickness)
        text = f"{class_names[int(label) - 1]} {score:.2f}"
        if track_ids is not None and track_ids[i] >= 0:
            text += f" #{int(track_ids[i])}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y0 - th - base)
        cv2.rectangle(image_bgr, (x0, top), (x0 + tw, top + th + base), colour, -1)
        cv2.putText(image_bgr, text, (x0, top + th), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), thickness, cv2.LINE_AA)
    return image_bgr


def saliency_strip(images, image_sizes, saliency):
    """An image strip: each frame (top) above its memory saliency map (bottom, JET).

    Args:
        images: `[T, Hp, Wp, 3]` the model inputs (RGB, 0-255).
        image_sizes: T (h, w) of the frames inside the padded inputs.
        saliency: `[T, hf, wf]` L2 norms of the memory (feature stride 16).

    Returns:
        uint8 BGR `[2 * h, T * w, 3]`.
    """
    saliency = np.asarray(saliency, np.float64)
    top = float(saliency.max()) if saliency.size else 0.0
    padded_h, padded_w = np.asarray(images).shape[1:3]
    tiles = []
    for image, (h, w), values in zip(images, image_sizes, saliency):
        frame = cv2.cvtColor(np.clip(image[:h, :w], 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        # The map covers the padded canvas; crop the part over the frame.
        crop_h = max(1, round(values.shape[0] * h / padded_h))
        crop_w = max(1, round(values.shape[1] * w / padded_w))
        values = values[:crop_h, :crop_w] / (top if top > 0 else 1.0)
        heat = cv2.resize((values * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        tiles.append(np.concatenate([frame, cv2.applyColorMap(heat, cv2.COLORMAP_JET)], 0))
    return np.concatenate(tiles, 1)


def _frame_json(frame, class_names, min_score):
    detections = []
    track_ids = frame.get("track_ids")
    for i, (box, score, label) in enumerate(zip(frame["boxes"], frame["scores"], frame["labels"])):
        if score < min_score:
            continue
        entry = {"box": [round(float(v), 2) for v in box], "label": int(label),
                 "class": class_names[int(label) - 1], "score": round(float(score), 5)}
        if track_ids is not None:
            entry["track_id"] = int(track_ids[i])
        detections.append(entry)
    return {"frame_index": int(frame["frame_index"]), "detections": detections}


def detect_video(config, model, input_path, output_dir, *, json_path=None, video_path=None,
                 saliency_path=None, saliency=False, window=None, stride=None, linking=None,
                 online=False, batch_windows=None, min_score=0.01, draw_score=0.3,
                 progress=True):
    """Detects objects in a video file or a folder of frames and writes the outputs.

    Args:
        config: `ExperimentConfig` (image size from `eval_data`, schedule from `eval`,
            class names, see `postprocess.class_names`).
        model: a restored `RFCN` or `STMN`.
        input_path: a video file or a folder of frames.
        output_dir: where `detections.json`, `annotated.mp4` and `saliency.png` go
            (unless the paths are given).
        saliency: also write the saliency strip (STMN only).
        window, stride, linking, batch_windows: override `config.eval`.
        online: the forward-only online runner.
        min_score: detections below it are left out of the JSON.
        draw_score: detections below it are not drawn.

    Returns:
        dict: the paths written, `num_frames`, `skipped_frames`, `frames` (the final
        per-frame detections).

    Raises:
        FileNotFoundError: no such file or folder.
        FrameSourceError: unreadable video, or no readable frame.
        ValueError: `saliency` with a static R-FCN.
    """
    source = open_frame_source(input_path)
    if saliency and not model.has_memory:
        raise ValueError("--saliency needs an STMN model: a static R-FCN has no memory")
    linking = linking or config.eval.linking
    if linking not in postprocess.LINKING_CHOICES:
        raise ValueError(f"linking must be one of {postprocess.LINKING_CHOICES}, got {linking!r}")
    runner = postprocess.make_runner(model, config.eval, online, window, stride,
                                     batch_windows=batch_windows)
    stride_used = getattr(runner, "stride", 1)
    window_used = getattr(runner, "window_length", None)  # None: online
    saliency_length = window or config.eval.window
    saliency_stride = stride or config.eval.stride
    resizer = FrameResizer(config.eval_data.image_size)
    names = postprocess.class_names(config)
    os.makedirs(output_dir, exist_ok=True)
    json_path = json_path or os.path.join(output_dir, "detections.json")
    video_path = video_path or os.path.join(output_dir, "annotated.mp4")

    bar = None
    if progress:
        from tqdm import tqdm

        total = source.declared_frames if source.declared_frames > 0 else None
        bar = tqdm(desc="detect", unit="frame", total=total, leave=False)
    frames, clip, frame_size = [], [], None
    for position, source_frame in enumerate(source):
        image, image_size, original_size = resizer(source_frame.image)
        frame_size = original_size
        if saliency and position % saliency_stride == 0 and len(clip) < saliency_length:
            clip.append((image, image_size))
        frames.extend(runner.push(prepared_frame(image, image_size, original_size,
                                                 source_frame.index)))
        if bar is not None:
            bar.update(1)
    frames.extend(runner.finish())
    if bar is not None:
        bar.close()
    skipped = list(source.skipped)
    frames = postprocess.link_video(frames, linking)

    result = {"source": input_path, "num_frames": len(frames), "skipped_frames": skipped,
              "frame_size": list(frame_size), "model": "stmn" if model.has_memory else "rfcn",
              "window": window_used, "stride": stride_used, "linking": linking,
              "online": bool(online), "class_names": list(names),
              "frames": [_frame_json(f, names, min_score) for f in frames]}
    with open(json_path, "w") as f:
        json.dump(result, f, indent=1)

    by_index = {int(f["frame_index"]): f for f in frames}
    height, width = frame_size
    writer = cv2.VideoWriter(video_path, cv2.VideoWriter_fourcc(*"mp4v"), source.fps,
                             (width, height))
    if not writer.isOpened():
        raise FrameSourceError(f"OpenCV cannot write {video_path}")
    try:
        for source_frame in source:  # the second decoding pass
            image = cv2.cvtColor(source_frame.image, cv2.COLOR_RGB2BGR)
            if source_frame.index in by_index:
                draw_detections(image, by_index[source_frame.index], names, draw_score)
            writer.write(image)
    finally:
        writer.release()

    written = {"json": json_path, "video": video_path}
    if saliency:
        import tensorflow as tf

        images = np.stack([image for image, _ in clip])
        maps = model.saliency({"images": tf.convert_to_tensor(images[None])})[0].numpy()
        strip = saliency_strip(images, [size for _, size in clip], maps)
        saliency_path = saliency_path or os.path.join(output_dir, "saliency.png")
        cv2.imwrite(saliency_path, strip)
        written["saliency"] = saliency_path
    return {**written, "num_frames": len(frames), "skipped_frames": skipped, "frames": frames}
