"""Does the memory single out the objects? The saliency of the paper's Fig. 4 (the L2
norm of the memory over its channels at each feature position), scored against the
ground truth: the mean saliency at feature cells inside ground-truth boxes over the
mean at the cells outside them.

A feature cell stands for the canvas pixel at its centre: cell (i, j) of an
`[hf, wf]` map over a padded `[Hp, Wp]` canvas is centred at canvas pixel
`((i + 0.5) * Hp / hf, (j + 0.5) * Wp / wf)`. The frame sits at the canvas' top left,
resized to `image_size` (`stmn_tf.data.pipeline.resize_and_pad`); cells centred in the
padding are left out of both means. A cell is inside when its centre, mapped to the
original frame, lies inside a box (`xmin <= x < xmax`, `ymin <= y < ymax`).

`evaluate_saliency` runs an STMN over the eval split the way the test windows do: each
video split into `stride` interleaved sub-sequences, each cut into consecutive clips of
`window` frames (the last one shorter), one `model.saliency` call per clip.
"""

import numpy as np


def cell_centers_xy(map_size, padded_size, image_size, original_size):
    """The feature cells' centres in original-frame pixels, and which lie in the frame.

    Args:
        map_size: (hf, wf) of the feature map.
        padded_size: (Hp, Wp) of the canvas the map covers.
        image_size: (h, w) of the resized frame at the canvas' top left.
        original_size: (H, W) of the original frame.

    Returns:
        `(x [hf, wf], y [hf, wf], in_frame [hf, wf] bool)`, x and y float64 pixels.
    """
    hf, wf = (int(s) for s in map_size)
    canvas_y = (np.arange(hf) + 0.5) * padded_size[0] / hf
    canvas_x = (np.arange(wf) + 0.5) * padded_size[1] / wf
    y, x = np.meshgrid(canvas_y, canvas_x, indexing="ij")
    in_frame = (y < image_size[0]) & (x < image_size[1])
    return x * original_size[1] / image_size[1], y * original_size[0] / image_size[0], in_frame


def box_cell_mask(boxes_xyxy, map_size, padded_size, image_size, original_size):
    """`[hf, wf]` bool: cells whose centre lies inside any of the boxes.

    Args:
        boxes_xyxy: `[N, 4]` pixel xmin, ymin, xmax, ymax in the original frame.
        map_size, padded_size, image_size, original_size: as `cell_centers_xy`.
    """
    x, y, _ = cell_centers_xy(map_size, padded_size, image_size, original_size)
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    inside = np.zeros(x.shape, bool)
    for xmin, ymin, xmax, ymax in boxes:
        inside |= (x >= xmin) & (x < xmax) & (y >= ymin) & (y < ymax)
    return inside


class SaliencyRatio:
    """Accumulates saliency inside and outside ground-truth boxes over frames.

    `add(saliency, boxes, padded_size, image_size, original_size)` for each frame
    (`saliency` `[hf, wf]`, boxes `[N, 4]` pixel xyxy); `result()` gives
    `{"inside_mean", "outside_mean", "ratio", "inside_cells", "outside_cells",
    "frames"}` (means over all the cells of all frames; `ratio` is
    `inside_mean / outside_mean`, None when either side has no cell or the outside
    mean is 0).
    """

    def __init__(self):
        self.inside_sum = self.outside_sum = 0.0
        self.inside_cells = self.outside_cells = 0
        self.frames = 0

    def add(self, saliency, boxes_xyxy, padded_size, image_size, original_size):
        saliency = np.asarray(saliency, np.float64)
        if saliency.ndim != 2:
            raise ValueError(f"saliency must be [hf, wf], got shape {saliency.shape}")
        _, _, in_frame = cell_centers_xy(saliency.shape, padded_size, image_size, original_size)
        inside = box_cell_mask(boxes_xyxy, saliency.shape, padded_size, image_size,
                               original_size) & in_frame
        outside = in_frame & ~inside
        self.inside_sum += float(saliency[inside].sum())
        self.outside_sum += float(saliency[outside].sum())
        self.inside_cells += int(inside.sum())
        self.outside_cells += int(outside.sum())
        self.frames += 1

    def result(self):
        inside = self.inside_sum / self.inside_cells if self.inside_cells else None
        outside = self.outside_sum / self.outside_cells if self.outside_cells else None
        ratio = inside / outside if inside is not None and outside else None
        return {"inside_mean": inside, "outside_mean": outside, "ratio": ratio,
                "inside_cells": self.inside_cells, "outside_cells": self.outside_cells,
                "frames": self.frames}


def saliency_clips(num_frames, window, stride):
    """The clips `evaluate_saliency` runs: lists of frame positions (module docstring)."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    clips = []
    for start in range(min(stride, num_frames)):
        sub = list(range(start, num_frames, stride))
        clips += [sub[i:i + window] for i in range(0, len(sub), window)]
    return clips


def video_frames(videos, progress=None):
    """Groups `(video_id, frame)` pairs, in order, into one list of frames per video.

    Args:
        videos: iterable of `(video_id, PreparedFrame)`, each video's frames together.
        progress: None, or the description of a tqdm bar over the videos.

    Yields:
        The frames of each video, a list.
    """
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(desc=progress, unit="video", leave=False)
    current, frames = None, []
    for video_id, frame in videos:
        if video_id != current and frames:
            yield frames
            frames = []
            if bar is not None:
                bar.update(1)
        current = video_id
        frames.append(frame)
    if frames:
        yield frames
    if bar is not None:
        bar.close()


def evaluate_saliency(model, videos, window, stride, progress=False):
    """The saliency ratio of an STMN over videos.

    Args:
        model: an `STMN` (its `saliency(images [1, T, Hp, Wp, 3])` -> `[1, T, hf, wf]`).
        videos: iterable of `(video_id, PreparedFrame)` in order, ground truth in
            `frame["meta"]["groundtruth"]["boxes"]` (pixel xyxy in the original
            frame), e.g. `stmn_tf.evaluation.run.eval_frames(config.eval_data)`.
        window: frames per clip.
        stride: sub-sequence stride.
        progress: show a tqdm bar over the videos.

    Returns:
        `SaliencyRatio.result()` plus `"videos"`.
    """
    import tensorflow as tf

    ratio = SaliencyRatio()

    def score(frames):
        for clip in saliency_clips(len(frames), window, stride):
            images = np.stack([np.asarray(frames[p]["image"], np.float32) for p in clip])
            maps = np.asarray(model.saliency(tf.convert_to_tensor(images[None])))[0]
            for p, values in zip(clip, maps):
                frame = frames[p]
                ratio.add(values, frame["meta"]["groundtruth"]["boxes"], images.shape[1:3],
                          frame["image_size"], frame["original_size"])

    num_videos = 0
    for frames in video_frames(videos, "saliency" if progress else None):
        score(frames)
        num_videos += 1
    return {**ratio.result(), "videos": num_videos}
