"""Does MatchTrans align in a trained STMN? The peakedness of its coefficients at the
objects and on the background, and whether their peak sits on the objects' motion.

    python -m stmn_tf.evaluation.alignment --model-dir DIR [--max-videos N] [--output F]

For every pair of consecutive frames `(t-1, t)` of the eval split's videos, sampled as
the test windows sample them (`stride` interleaved sub-sequences), the forward
coefficients that the model's memory uses, `match_trans_coefficients(F_t, F_{t-1}, k,
affinity_power=p, centre_features=...)` with the cell's own settings (`[h, w, (2k+1)^2]`, offset
`(dy, dx)` at `(dy+k)*(2k+1) + (dx+k)`), are summarised over three sets of feature cells
(cell centres mapped to the original frame as in `stmn_tf.evaluation.saliency`):

- `object`: cells inside a ground-truth box at t;
- `background`: cells in the frame and outside every box;
- `track`: the cell holding a track's box centre at t, when the same track is in frame
  t-1. Its true offset is the cell of that track's centre at t-1 minus the cell at t
  (the coefficient at `(dy, dx)` weights `M_{t-1}` at `(y+dy, x+dx)`), counted when it
  lies in the window.

Per set: the mean largest weight, the mean entropy in nats, the mean weight on the zero
offset, and for `track` also the mean weight on the true offset and how often the
largest weight is on it. Uniform weights over a full window are `1/(2k+1)^2` and
`ln (2k+1)^2` nats (0.04 and 3.22 for k = 2): nearly uniform coefficients are a blur of
the memory, not an alignment (paper Sec. 3.3; the authors' ReLU'd cosine on
non-negative features).

A model without alignment (STMN-No-MatchTrans) is measured too: the numbers are what
MatchTrans would compute on its features.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

from stmn_tf.evaluation.saliency import box_cell_mask
from stmn_tf.evaluation.saliency import cell_centers_xy
from stmn_tf.evaluation.saliency import saliency_clips
from stmn_tf.evaluation.saliency import video_frames

SETS = ("object", "background", "track")


def point_cells(points_xy, map_size, padded_size, image_size, original_size):
    """The feature cells `(row, col)` holding original-frame pixels.

    Args:
        points_xy: `[N, 2]` pixel `(x, y)` in the original frame.
        map_size, padded_size, image_size, original_size: as
            `stmn_tf.evaluation.saliency.cell_centers_xy`.

    Returns:
        `[N, 2]` int64 `(row, col)`, clipped to the map.
    """
    points = np.asarray(points_xy, np.float64).reshape(-1, 2)
    hf, wf = (int(s) for s in map_size)
    canvas_x = points[:, 0] * image_size[1] / original_size[1]
    canvas_y = points[:, 1] * image_size[0] / original_size[0]
    rows = np.clip(np.floor(canvas_y * hf / padded_size[0]), 0, hf - 1)
    cols = np.clip(np.floor(canvas_x * wf / padded_size[1]), 0, wf - 1)
    return np.stack([rows, cols], axis=1).astype(np.int64)


def _entropy(weights):
    """`[N, K]` -> `[N]` nats, with 0 log 0 = 0."""
    safe = np.where(weights > 0, weights, 1.0)
    return -np.sum(np.where(weights > 0, weights * np.log(safe), 0.0), axis=-1)


class AlignmentStats:
    """Accumulates the coefficients' statistics over frames (module docstring).

    `add(coefficients, boxes, prev_boxes, track_ids, prev_track_ids, padded_size,
    image_size, original_size)` per frame t > 0 of a sub-sequence; `result()` gives, per
    set, `{"cells", "largest", "entropy", "zero_offset"}` (means; None without cells)
    and for `track` also `"true_offset"`, `"argmax_on_true"` (over the tracks whose
    true offset is in the window) and `"in_window"` (the fraction of tracks whose offset
    is), plus `"uniform_largest"`, `"uniform_entropy"` and `"frames"`.
    """

    def __init__(self, k):
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        self.k = int(k)
        self.side = 2 * self.k + 1
        self.sums = {name: {"cells": 0, "largest": 0.0, "entropy": 0.0, "zero_offset": 0.0}
                     for name in SETS}
        self.tracks = 0
        self.reachable = 0
        self.true_weight = 0.0
        self.true_argmax = 0
        self.frames = 0

    def _add_cells(self, name, weights):
        sums = self.sums[name]
        sums["cells"] += len(weights)
        sums["largest"] += float(weights.max(axis=-1).sum()) if len(weights) else 0.0
        sums["entropy"] += float(_entropy(weights).sum())
        sums["zero_offset"] += float(weights[:, self.k * self.side + self.k].sum())

    def add(self, coefficients, boxes_xyxy, prev_boxes_xyxy, track_ids, prev_track_ids,
            padded_size, image_size, original_size):
        """One frame t, with the ground truth of t and t-1.

        Args:
            coefficients: `[hf, wf, (2k+1)^2]`.
            boxes_xyxy, prev_boxes_xyxy: `[N, 4]`, `[M, 4]` pixel xyxy at t and t-1.
            track_ids, prev_track_ids: `[N]`, `[M]`.
            padded_size, image_size, original_size: as `cell_centers_xy`.
        """
        coefficients = np.asarray(coefficients, np.float64)
        if coefficients.ndim != 3 or coefficients.shape[-1] != self.side ** 2:
            raise ValueError(f"coefficients must be [hf, wf, {self.side ** 2}] for k = "
                             f"{self.k}, got shape {coefficients.shape}")
        map_size = coefficients.shape[:2]
        _, _, in_frame = cell_centers_xy(map_size, padded_size, image_size, original_size)
        inside = box_cell_mask(boxes_xyxy, map_size, padded_size, image_size,
                               original_size) & in_frame
        self._add_cells("object", coefficients[inside])
        self._add_cells("background", coefficients[in_frame & ~inside])

        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        prev_boxes = np.asarray(prev_boxes_xyxy, np.float64).reshape(-1, 4)
        previous = {int(t): i for i, t in enumerate(np.asarray(prev_track_ids).reshape(-1))}
        pairs = [(i, previous[int(t)]) for i, t in enumerate(np.asarray(track_ids).reshape(-1))
                 if int(t) in previous]
        if pairs:
            now = point_cells([(boxes[i, :2] + boxes[i, 2:]) / 2 for i, _ in pairs], map_size,
                              padded_size, image_size, original_size)
            before = point_cells([(prev_boxes[j, :2] + prev_boxes[j, 2:]) / 2 for _, j in pairs],
                                 map_size, padded_size, image_size, original_size)
            weights = coefficients[now[:, 0], now[:, 1]]
            self._add_cells("track", weights)
            offsets = before - now  # (dy, dx)
            reach = np.all(np.abs(offsets) <= self.k, axis=1)
            index = (offsets[:, 0] + self.k) * self.side + offsets[:, 1] + self.k
            self.tracks += len(pairs)
            for w, i, ok in zip(weights, index, reach):
                if ok:
                    self.true_weight += float(w[i])
                    self.true_argmax += int(np.argmax(w) == i)
            self.reachable += int(reach.sum())
        self.frames += 1

    def result(self):
        out = {}
        for name, sums in self.sums.items():
            n = sums["cells"]
            out[name] = {"cells": n, **{key: (sums[key] / n if n else None)
                                        for key in ("largest", "entropy", "zero_offset")}}
        reachable = self.reachable
        out["track"].update({
            "true_offset": self.true_weight / reachable if reachable else None,
            "argmax_on_true": self.true_argmax / reachable if reachable else None,
            "in_window": reachable / self.tracks if self.tracks else None,
        })
        out.update({"uniform_largest": 1.0 / self.side ** 2,
                    "uniform_entropy": math.log(self.side ** 2), "frames": self.frames})
        return out


def evaluate_alignment(model, videos, stride, progress=False):
    """The coefficients' statistics of an STMN over videos.

    Args:
        model: an `STMN` (`extract_features(images [1, T, Hp, Wp, 3])` ->
            `[1, T, hf, wf, C]`, `memory_cells()`).
        videos: iterable of `(video_id, PreparedFrame)` in order, ground truth in
            `frame["meta"]["groundtruth"]` (`"boxes"` pixel xyxy, `"track_ids"`), e.g.
            `stmn_tf.evaluation.run.eval_frames(config.eval_data)`.
        stride: sub-sequence stride (the test windows' `eval.stride`).
        progress: show a tqdm bar over the videos.

    Returns:
        `AlignmentStats.result()` plus `"videos"`, `"k"`, `"affinity_power"`,
        `"centre_features"` and `"align"` (whether the model's memory uses the coefficients).
    """
    import tensorflow as tf

    from stmn_tf.ops.match_trans_op import match_trans_coefficients

    cell = model.memory_cells()[0]  # the forward cell: its k and p are MatchTrans'
    k, power = int(cell.k), float(cell.affinity_power)
    centre = bool(cell.centre_features)
    prior = cell.offset_log_prior()  # the learned offset prior, if any: part of the weights
    stats = AlignmentStats(k)

    def score(frames):
        # Every frame's features once; then each sub-sequence's consecutive pairs.
        images = np.stack([np.asarray(f["image"], np.float32) for f in frames])
        features = model.extract_features(tf.convert_to_tensor(images[None]))[0]
        for clip in saliency_clips(len(frames), len(frames), stride):
            if len(clip) < 2:
                continue
            now = tf.gather(features, clip[1:])
            before = tf.gather(features, clip[:-1])
            coefficients = np.asarray(match_trans_coefficients(
                now, before, k=k, implementation="tf", affinity_power=power,
                centre_features=centre, offset_prior=prior))
            for c, p, q in zip(coefficients, clip[1:], clip[:-1]):
                truth, prev = (frames[i]["meta"]["groundtruth"] for i in (p, q))
                stats.add(c, truth["boxes"], prev["boxes"], truth["track_ids"],
                          prev["track_ids"], images.shape[1:3], frames[p]["image_size"],
                          frames[p]["original_size"])

    num_videos = 0
    for frames in video_frames(videos, "alignment" if progress else None):
        score(frames)
        num_videos += 1
    return {**stats.result(), "videos": num_videos, "k": k, "affinity_power": power,
            "centre_features": centre, "align": bool(cell.align),
            "offset_prior": learned_offset_priors(model)}


def learned_offset_priors(model):
    """`{"forward": [...], "backward": [...]}`: each memory cell's learned offset prior
    as the weights it gives the window's offsets alone, `exp(b) / sum(exp(b))`
    (`(2k+1)^2`, offset `(dy, dx)` at `(dy+k)*(2k+1) + dx+k`); None without one."""
    cells = model.memory_cells()
    if cells[0].offset_log_prior() is None:
        return None
    names = ("forward", "backward") if len(cells) == 2 else ("forward",)
    out = {}
    for name, cell in zip(names, cells):
        b = np.asarray(cell.offset_log_prior(), np.float64)
        w = np.exp(b - b.max())
        out[name] = (w / w.sum()).tolist()
    return out


def format_table(results):
    """Markdown rows for `{name: evaluate_alignment(...)}`."""
    def cell(value, fmt):
        return "n/a" if value is None else format(value, fmt)

    lines = ["| model | cells | largest weight | entropy (nats) | weight on zero offset "
             "| weight on true offset | argmax on true |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, result in results.items():
        for part in SETS:
            r = result[part]
            true = (cell(r.get("true_offset"), ".3f"), cell(r.get("argmax_on_true"), ".0%"))
            lines.append(f"| {name} | {part} ({r['cells']}) | {cell(r['largest'], '.3f')} "
                         f"| {cell(r['entropy'], '.2f')} | {cell(r['zero_offset'], '.3f')} "
                         f"| {true[0] if part == 'track' else ''} "
                         f"| {true[1] if part == 'track' else ''} |")
    for name, result in results.items():
        for direction, weights in (result.get("offset_prior") or {}).items():
            side = int(round(len(weights) ** 0.5))
            lines.append(f"\n{name}, learned offset prior ({direction}), exp(b) / sum, "
                         "rows dy = -k..k, columns dx = -k..k:")
            lines += ["    " + " ".join(f"{w:.3f}" for w in weights[row * side:(row + 1) * side])
                      for row in range(side)]
    any_result = next(iter(results.values()))
    lines.append(f"\nUniform over the window: largest {any_result['uniform_largest']:.3f}, "
                 f"entropy {any_result['uniform_entropy']:.2f} nats.")
    return lines


def plot_offset_priors(results, path):
    """One heat map per model and direction of its learned offset prior (`exp(b) /
    sum`, the window's offsets, dy down, dx right) in a PNG at `path`; returns whether
    any model had a prior (nothing is written otherwise). Written whole or not at all."""
    panels = [(name, direction, weights) for name, result in results.items()
              for direction, weights in (result.get("offset_prior") or {}).items()]
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stmn_tf.figures import save_png

    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9), squeeze=False)
    for ax, (name, direction, weights) in zip(axes[0], panels):
        side = int(round(len(weights) ** 0.5))
        k = side // 2
        grid = np.asarray(weights).reshape(side, side)
        image = ax.imshow(grid, cmap="viridis", vmin=0.0,
                          extent=(-k - 0.5, k + 0.5, k + 0.5, -k - 0.5))
        for (row, col), w in np.ndenumerate(grid):
            ax.text(col - k, row - k, f"{w:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if w < 0.6 * grid.max() else "black")
        ax.set_title(f"{name}\n{direction}", fontsize=7)
        ax.set_xlabel("dx (cells)", fontsize=7)
        ax.set_ylabel("dy (cells)", fontsize=7)
        ax.tick_params(labelsize=6)
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle("MatchTrans' learned offset prior, exp(b) / sum", fontsize=8)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    return True


def model_names(model_dirs):
    """A row name per model directory: its last component, or, where two directories
    share it (`a/stmn_seed0`, `b/stmn_seed0`), the path as given, so no row replaces
    another."""
    paths = [os.path.normpath(d) for d in model_dirs]
    names = [os.path.basename(p) for p in paths]
    return [p if names.count(n) > 1 else n for p, n in zip(paths, names)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", required=True, nargs="+",
                        help="train.py model directories of STMNs (config.yaml and checkpoints)")
    parser.add_argument("--max-videos", type=int, default=0, help="0: every eval video")
    parser.add_argument("--data", default=None, help="eval file pattern (default: the config's)")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    parser.add_argument("--plot", default=None,
                        help="write the models' learned offset priors as heat maps to this PNG")
    args = parser.parse_args(argv)

    from stmn_tf.configs import load_config
    from stmn_tf.data import synthetic
    from stmn_tf.evaluation import run as eval_run
    from stmn_tf.training import checkpointing

    results = {}
    for name, model_dir in zip(model_names(args.model_dir), args.model_dir):
        config_path = os.path.join(model_dir, "config.yaml")
        if not os.path.exists(config_path):
            parser.error(f"--model-dir {model_dir}: no config.yaml (not a train.py model directory)")
        config = synthetic.resolve_synthetic_data(load_config(config_path))
        if config.model.type != "stmn":
            parser.error(f"--model-dir {model_dir}: model.type is {config.model.type!r}, "
                         "not an STMN")
        if args.data:
            config.eval_data.input_path = args.data
        model = checkpointing.restore_model(config, model_dir)[0]
        videos = eval_run.eval_frames(config.eval_data, args.max_videos or None)
        results[name] = evaluate_alignment(
            model, videos, config.eval.stride, progress=True)
    print("\n".join(format_table(results)))
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)
    if args.plot:
        if plot_offset_priors(results, args.plot):
            print(f"wrote {args.plot}")
        else:
            print(f"--plot {args.plot}: no model has a learned offset prior; nothing written")
    print(json.dumps({name: {part: r[part] for part in SETS} for name, r in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
