"""Does MatchTrans carry the memory along with a moving object? The layers alone.

A controlled experiment on feature-level clips (no backbone, no detector): each clip
holds `--objects` objects (default 3) of distinct classes on a static textured
background. Each object shows its class (a one-hot cue in the first `classes` channels)
in one random frame of its own only and moves `v` cells per frame in a random
direction; in every frame it is visible as an object (an objectness channel and a
texture of its own that moves with it). With one object per clip a memory could answer
by spreading that class over the whole map; with several of distinct classes it has to
keep each class on its own object. A small Keras model, memory -> 1x1 conv -> class
logits, is trained (on all speeds at once, or one model per speed with
`--train-per-speed`) to tell the class at the objects' cells in every frame; it is
measured on the frames where an object's cue is hidden, where only the memory can know
the class. The memories compared:

    stmn                 BidirectionalSTMM(cell="stmm", align=True)   (paper Sec. 3,
                         the authors' MatchTrans, affinity_power=1)
    stmn_no_matchtrans   BidirectionalSTMM(cell="stmm", align=False)  (Table 2)
    convgru              BidirectionalSTMM(cell="convgru", align=False)
    static               a 3x3 conv with no memory (chance is 1 / classes)
    convgru_matchtrans   BidirectionalSTMM(cell="convgru", align=True)  (not by default)
    stmn_sharpened       BidirectionalSTMM(cell="stmm", align=True,
                         affinity_power=--affinity-power)  (not by default): the
                         ReLU'd cosine raised to a power before the normalisation

plus, with `--prototypes`, a sharpening that the layers do not offer:
`stmn_centred` (the features centred over the frame's positions before the cosine),
built here from the convolutions of public `STMMCell`s and `stmn_tf.ops.bn_star`.

The input plays the part of STMN's F_t: the frame's own feature map that MatchTrans
reads (paper Sec. 3.3), which STMN takes from a pretrained network. By default it is
non-negative, as ReLU features are (`--features relu`): every channel is ReLU'd after
the noise; `--features signed` keeps zero-mean textures instead. The 3x3 convolutions
of the STMM move information by at most one cell per frame; MatchTrans (k = 2) by at
most two (plus the convolutions' one); so for v > 1 a memory without alignment falls
behind its object.

    python benchmarks/memory_transport.py [--speeds 0 0.5 1 1.5 2 2.5 3] [--seeds 3]
        [--steps 600] [--variants ... stmn_sharpened] [--affinity-power 4]
        [--prototypes] [--output-dir reports/memory_transport]

The default run (3 seeds x 4 variants, each trained on all 7 speeds) takes about 15
minutes on 2 cores; each prototype adds about 4 minutes per seed.

Prints a progress line per run, a table of hidden-frame accuracy per speed and
variant (mean over seeds, spread max - min in brackets) and of the MatchTrans
coefficients' peakedness at the object's cells, writes `accuracy.png` and
`results.json` in the output directory, and ends with one JSON line
`{"speeds": [...], "accuracy": {"stmn": [...], "stmn_no_matchtrans": [...],
"convgru": [...]}, "seeds": N, ...}`.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # small CPU models; no device probing

import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from stmn_tf import ops  # noqa: E402
from stmn_tf.layers import BidirectionalSTMM  # noqa: E402
from stmn_tf.layers import STMMCell  # noqa: E402

DEFAULT_SPEEDS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
MAIN_VARIANTS = ("stmn", "stmn_no_matchtrans", "convgru")
PROTOTYPES = ("stmn_centred",)
VARIANTS = MAIN_VARIANTS + ("static", "convgru_matchtrans", "stmn_sharpened") + PROTOTYPES
DEFAULT_AFFINITY_POWER = 4.0
_NORM_EPSILON = 1e-8  # as in stmn_tf.ops.match_trans
_MIN_MASS = 1e-7


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """The clips' design.

    Attributes:
      size: int. Height and width of the feature map, in cells.
      frames: int. T.
      classes: int. Number of object classes (cue channels).
      objects: int. Objects per clip, of distinct classes (so that a memory cannot
        answer by spreading one class over the whole map).
      texture_channels: int. Channels of the object's and the background's textures.
      object_size: int. The object is an `object_size` x `object_size` square (odd).
      noise: float. Standard deviation of the per-frame Gaussian noise on every channel.
      features: str. `"relu"` (every channel ReLU'd after the noise: non-negative, as
        ReLU feature maps are) or `"signed"` (zero-mean textures, no ReLU).
    """

    size: int = 18
    frames: int = 6
    classes: int = 4
    objects: int = 3
    texture_channels: int = 12
    object_size: int = 3
    noise: float = 0.1
    features: str = "relu"

    @property
    def channels(self):
        # [class cue | objectness | texture]
        return self.classes + 1 + self.texture_channels


def make_clips(rng, batch, speed, spec):
    """Random clips of `spec.objects` objects, each moving `speed` cells per frame.

    Each object's centre moves on a straight line, `speed` cells per frame in its own
    direction drawn uniformly in angle, and is drawn at the cell of its rounded centre;
    its start is drawn so that the whole object stays inside the map for all frames.
    The objects of a clip have distinct classes, and each shows its class cue in one
    frame of its own, drawn uniformly. Where objects overlap, the later one is in front.

    Args:
      rng: `np.random.Generator`.
      batch: int. Number of clips.
      speed: float. Cells per frame, `0 <= speed`.
      spec: `ClipSpec`.

    Returns:
      dict of NumPy arrays (N = `spec.objects`):
        features: `[B, T, H, W, C]` float32; channels `[cue (classes) | objectness (1)
          | texture (texture_channels)]`.
        labels: `[B, T, H, W]` int32, the class of the object in front at each cell,
          -1 on the background.
        hidden: `[B, T, H, W]` bool, object cells whose object's cue is hidden in that
          frame (what the accuracy counts).
        distance: `[B, T, H, W]` int32, frames from the cell's object's cue frame, -1
          on the background.
        classes: `[B, N]` int32, each object's class in `[0, classes)`.
        cue: `[B, N, T]` bool, the frame where each object's cue shows.
        centres: `[B, N, T, 2]` float64, exact centres (row, column) in cells.
        cells: `[B, N, T, 2]` int32, the rounded centres where the objects are drawn.
    """
    if speed < 0:
        raise ValueError(f"make_clips: speed must be >= 0, got {speed}")
    if spec.object_size % 2 != 1:
        raise ValueError(f"make_clips: object_size must be odd, got {spec.object_size}")
    if spec.features not in ("relu", "signed"):
        raise ValueError(f"make_clips: features must be 'relu' or 'signed', got {spec.features!r}")
    if not 1 <= spec.objects <= spec.classes:
        raise ValueError(
            f"make_clips: objects must be in [1, classes={spec.classes}] (distinct classes), "
            f"got {spec.objects}"
        )
    t_, s, r, n_ = spec.frames, spec.size, spec.object_size // 2, spec.objects
    travel = speed * (t_ - 1)
    # The centre stays in [r, s - 1 - r] after rounding for every frame.
    room = s - 1 - 2 * r
    if travel > room + 1e-9:
        raise ValueError(
            f"make_clips: an object moving {speed} cells per frame over {t_} frames "
            f"travels {travel:.1f} cells, more than the {room:.0f} a {s}x{s} map leaves "
            f"for a {spec.object_size}x{spec.object_size} object"
        )
    angle = rng.uniform(0.0, 2.0 * np.pi, size=(batch, n_))
    step = speed * np.stack([np.sin(angle), np.cos(angle)], axis=-1)  # [B, N, 2] (dy, dx)
    span = step * (t_ - 1)
    low = r + np.maximum(0.0, -span)
    high = (s - 1 - r) - np.maximum(0.0, span)
    start = low + rng.uniform(size=(batch, n_, 2)) * (high - low)
    centres = start[:, :, None, :] + np.arange(t_)[None, None, :, None] * step[:, :, None, :]
    # floor(x + 0.5): half-cells always round the same way, so the spacing stays exact.
    cells = np.clip(np.floor(centres + 0.5).astype(np.int32), r, s - 1 - r)

    classes = np.argsort(rng.uniform(size=(batch, spec.classes)), axis=1)[:, :n_]
    classes = classes.astype(np.int32)
    cue_frame = rng.integers(0, t_, size=(batch, n_))
    cue = np.arange(t_)[None, None, :] == cue_frame[:, :, None]  # [B, N, T]

    def texture(*shape):
        values = rng.normal(size=shape + (spec.texture_channels,))
        return np.maximum(values, 0.0) if spec.features == "relu" else values

    background = texture(batch, s, s)  # static over the clip, as a static scene
    patterns = texture(batch, n_, spec.object_size, spec.object_size)  # move with objects
    features = np.zeros((batch, t_, s, s, spec.channels), np.float64)
    features[..., spec.classes + 1 :] = background[:, None]
    labels = np.full((batch, t_, s, s), -1, np.int32)
    hidden = np.zeros((batch, t_, s, s), bool)
    distance = np.full((batch, t_, s, s), -1, np.int32)
    for b in range(batch):
        for j in range(n_):
            for t in range(t_):
                y, x = cells[b, j, t]
                window = (b, t, slice(y - r, y + r + 1), slice(x - r, x + r + 1))
                features[window] = 0.0
                features[window + (slice(spec.classes + 1, None),)] = patterns[b, j]
                features[window + (spec.classes,)] = 1.0  # objectness
                if cue[b, j, t]:
                    features[window + (classes[b, j],)] = 1.0
                labels[window] = classes[b, j]
                hidden[window] = not cue[b, j, t]
                distance[window] = abs(t - cue_frame[b, j])
    features += spec.noise * rng.normal(size=features.shape)
    if spec.features == "relu":
        features = np.maximum(features, 0.0)
    return {
        "features": features.astype(np.float32),
        "labels": labels,
        "hidden": hidden,
        "distance": distance,
        "classes": classes,
        "cue": cue,
        "centres": centres,
        "cells": cells,
    }


def hidden_accuracy(predictions, labels, hidden):
    """Correct object cells in the frames where their object's cue is hidden.

    Args:
      predictions: `[B, T, H, W]` int, the predicted class of every cell.
      labels: `[B, T, H, W]` int, the true class (-1 on the background).
      hidden: `[B, T, H, W]` bool, the cells to count.

    Returns:
      `(correct, counted)`: ints.
    """
    hidden = np.asarray(hidden)
    correct = (np.asarray(predictions) == np.asarray(labels)) & hidden
    return int(correct.sum()), int(hidden.sum())


def accuracy_by_distance(predictions, labels, hidden, distance, frames):
    """`hidden_accuracy` split by the number of frames to the object's cue frame.

    Args:
      predictions, labels, hidden: as `hidden_accuracy`.
      distance: `[B, T, H, W]` int, frames from the cell's object's cue frame.
      frames: int. T.

    Returns:
      `(correct, counted)`: int arrays `[T]`, index d for the cells d frames away from
      their cue; index 0 (cue frames) is always 0.
    """
    hidden, distance = np.asarray(hidden), np.asarray(distance)
    right = (np.asarray(predictions) == np.asarray(labels)) & hidden
    correct, counted = np.zeros(frames, int), np.zeros(frames, int)
    for d in range(1, frames):
        at = distance == d
        correct[d] = int((right & at).sum())
        counted[d] = int((hidden & at).sum())
    return correct, counted


# ----------------------------------------------------------------------------------
# Centred MatchTrans (a prototype of an option the layers do not have).


def window_cosines(features, prev_features, k):
    """Cosines of each position of `features` with its window in `prev_features`.

    Args:
      features, prev_features: `[B, H, W, C]`.
      k: int. Window radius.

    Returns:
      `(cosines, inside)`: `[B, H, W, (2k+1)^2]` each, offset `(dy, dx)` at index
      `(dy+k)*(2k+1) + (dx+k)` (as `stmn_tf.ops.match_trans_coefficients`); `inside`
      is 1 for in-bounds neighbours, else 0 (and the cosine there is 0).
    """
    f = features / (tf.norm(features, axis=-1, keepdims=True) + _NORM_EPSILON)
    fp = prev_features / (tf.norm(prev_features, axis=-1, keepdims=True) + _NORM_EPSILON)
    h, w = tf.shape(f)[1], tf.shape(f)[2]
    pad = [[0, 0], [k, k], [k, k], [0, 0]]
    fp = tf.pad(fp, pad)
    ones = tf.pad(tf.ones_like(f[..., :1]), pad)
    cosines, inside = [], []
    for dy in range(2 * k + 1):
        for dx in range(2 * k + 1):
            cosines.append(tf.reduce_sum(f * fp[:, dy : dy + h, dx : dx + w], axis=-1))
            inside.append(ones[:, dy : dy + h, dx : dx + w, 0])
    return tf.stack(cosines, axis=-1), tf.stack(inside, axis=-1)


def sharpened_coefficients(features, prev_features, k=2, affinity="authors"):
    """MatchTrans coefficients with an optional centring of the features.

    `"authors"`: `max(0, cos)` normalised over the in-bounds window, the layers'
    formula (`stmn_tf.ops.match_trans_coefficients`). `"centred"`: the cosine of the
    features minus their mean over the frame's positions (each frame its own mean),
    which removes the positive offset that non-negative features share. The identity
    where no affinity is positive, as in the layers. (The power sharpening is the
    layers' own `affinity_power`.)

    Args:
      features, prev_features: `[B, H, W, C]`.
      k: int. Window radius. Defaults to 2.
      affinity: str. `"authors"` or `"centred"`. Defaults to `"authors"`.

    Returns:
      `[B, H, W, (2k+1)^2]`, summing to 1 at every position; no gradient.
    """
    if affinity not in ("authors", "centred"):
        raise ValueError(f"affinity must be 'authors' or 'centred', got {affinity!r}")
    features = tf.stop_gradient(tf.convert_to_tensor(features, tf.float32))
    prev_features = tf.stop_gradient(tf.convert_to_tensor(prev_features, tf.float32))
    if affinity == "centred":
        features = features - tf.reduce_mean(features, axis=[1, 2], keepdims=True)
        prev_features = prev_features - tf.reduce_mean(prev_features, axis=[1, 2], keepdims=True)
    cosines, inside = window_cosines(features, prev_features, k)
    a = tf.nn.relu(cosines) * inside
    mass = tf.reduce_sum(a, axis=-1, keepdims=True)
    identity = tf.one_hot((2 * k + 1) * k + k, (2 * k + 1) ** 2)
    empty = mass < _MIN_MASS
    return tf.where(empty, identity, a / tf.where(empty, tf.ones_like(mass), mass))


def align_with(coefficients, memory, k):
    """`sum_o coefficients[..., o] * memory(p + o)`: `[B, H, W, D]` (MatchTrans' sum)."""
    h, w = tf.shape(memory)[1], tf.shape(memory)[2]
    padded = tf.pad(memory, [[0, 0], [k, k], [k, k], [0, 0]])
    side = 2 * k + 1
    out = tf.zeros_like(memory)
    for dy in range(side):
        for dx in range(side):
            out += coefficients[..., dy * side + dx, None] * padded[:, dy : dy + h, dx : dx + w]
    return out


class CentredBidirectionalSTMM(keras.layers.Layer):
    """BidirectionalSTMM with a centred MatchTrans (a prototype for this experiment).

    Two `STMMCell`s (forward and backward in time) whose memories are aligned with
    `sharpened_coefficients` before each step of Eqs. 1-4 (the cells themselves run
    with `align=False`, so the alignment is the one done here). With
    `affinity="authors"` it computes what `BidirectionalSTMM` computes (a test checks
    it). T must be static.

    Args:
      filters: int. Channels of each direction's memory.
      affinity: str. See `sharpened_coefficients`. Defaults to `"centred"`.
      k: int. Window radius. Defaults to 2.

    Call arguments:
      sequences: `[B, T, H, W, C]`.

    Returns:
      `[B, T, H, W, 2 * filters]`, forward memory channels first, then backward.
    """

    def __init__(self, filters, affinity="centred", k=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.affinity = affinity
        self.k = k

    def build(self, sequences_shape):
        step_shape = (None, None, None, sequences_shape[-1])
        self.forward_cell = STMMCell(self.filters, align=False, name="forward_cell")
        self.backward_cell = STMMCell(self.filters, align=False, name="backward_cell")
        self.forward_cell.build(step_shape)
        self.backward_cell.build(step_shape)
        self.built = True

    def _step(self, cell, features, coefficients, memory):
        memory = align_with(coefficients, memory, self.k)  # Sec. 3.3
        z = ops.bn_star(keras.ops.relu(cell.conv_z_w(features) + cell.conv_z_u(memory)))  # Eq. 1
        r = ops.bn_star(keras.ops.relu(cell.conv_r_w(features) + cell.conv_r_u(memory)))  # Eq. 2
        candidate = keras.ops.relu(cell.conv_w(features) + cell.conv_u(r * memory))  # Eq. 3
        return (1.0 - z) * memory + z * candidate  # Eq. 4

    def _run(self, cell, sequences, coefficients, order):
        shape = keras.ops.shape(sequences)
        memory = keras.ops.zeros((shape[0], shape[2], shape[3], self.filters))
        outputs = {}
        for t in order:
            memory = self._step(cell, sequences[:, t], coefficients[t], memory)
            outputs[t] = memory
        return keras.ops.stack([outputs[t] for t in range(len(order))], axis=1)

    def call(self, sequences):
        steps = sequences.shape[1]
        shape = keras.ops.shape(sequences)
        # The coefficients read only the features: every pair of frames in one call.
        # pairs[t] = coefficients(F_t, F_{t-1}); the backward memory uses (F_t, F_{t+1}).
        flat = lambda x: keras.ops.reshape(x, (-1, shape[2], shape[3], sequences.shape[-1]))
        later, earlier = flat(sequences[:, 1:]), flat(sequences[:, :-1])
        both = sharpened_coefficients(
            keras.ops.concatenate([later, earlier], 0),
            keras.ops.concatenate([earlier, later], 0),
            self.k, self.affinity,
        )  # [2 * B * (T-1), H, W, (2k+1)^2]
        both = keras.ops.reshape(both, (2, shape[0], steps - 1, shape[2], shape[3], -1))
        # The first step of each direction: F_{t-1} = F_t with zero memory, where any
        # alignment of the zero memory is zero; the identity stands in.
        identity = keras.ops.zeros_like(both[0, :, 0]) + keras.ops.one_hot(
            (2 * self.k + 1) * self.k + self.k, (2 * self.k + 1) ** 2
        )
        forward = [identity] + [both[0, :, t - 1] for t in range(1, steps)]
        backward = [both[1, :, t] for t in range(steps - 1)] + [identity]
        forward = self._run(self.forward_cell, sequences, forward, list(range(steps)))
        backward = self._run(self.backward_cell, sequences, backward,
                             list(range(steps))[::-1])
        return keras.ops.concatenate([forward, backward], axis=-1)


# ----------------------------------------------------------------------------------
# Models, training, measurement.


def memory_layer(variant, filters, affinity_power=DEFAULT_AFFINITY_POWER):
    """The layer that the variant puts between the features and the classifier
    (`affinity_power`: that of `stmn_sharpened`)."""
    if variant == "stmn":
        return BidirectionalSTMM(filters, cell="stmm", align=True, name="memory")
    if variant == "stmn_no_matchtrans":
        return BidirectionalSTMM(filters, cell="stmm", align=False, name="memory")
    if variant == "convgru":
        return BidirectionalSTMM(filters, cell="convgru", align=False, name="memory")
    if variant == "convgru_matchtrans":
        return BidirectionalSTMM(filters, cell="convgru", align=True, name="memory")
    if variant == "static":
        # Each frame alone: a 3x3 conv over space only.
        return keras.layers.Conv3D(
            2 * filters, (1, 3, 3), padding="same", activation="relu", name="memory"
        )
    if variant == "stmn_sharpened":
        return BidirectionalSTMM(filters, cell="stmm", align=True,
                                 affinity_power=affinity_power, name="memory")
    if variant == "stmn_centred":
        return CentredBidirectionalSTMM(filters, affinity="centred", name="memory")
    raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def build_model(variant, spec, filters, affinity_power=DEFAULT_AFFINITY_POWER):
    """features `[B, T, H, W, C]` -> memory -> 1x1 conv -> logits `[B, T, H, W, classes]`."""
    inputs = keras.Input((spec.frames, spec.size, spec.size, spec.channels))
    memory = memory_layer(variant, filters, affinity_power)(inputs)
    logits = keras.layers.Dense(spec.classes, name="classifier")(memory)  # a 1x1 conv
    return keras.Model(inputs, logits, name=variant)


def train(variant, train_speeds, seed, spec, args):
    """Trains one model; each batch's speed is drawn from `train_speeds`.

    Returns:
      `(model, final_loss)`.
    """
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng([seed] + [int(round(v * 100)) for v in train_speeds])
    model = build_model(variant, spec, args.filters, args.affinity_power)
    optimizer = keras.optimizers.Adam(args.learning_rate, clipnorm=1.0)

    @tf.function
    def train_step(features, labels):
        with tf.GradientTape() as tape:
            logits = model(features, training=True)  # [B, T, H, W, classes]
            targets = tf.maximum(labels, 0)
            losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, logits)
            # The class is asked at the objects' cells in every frame, cue or not.
            weights = tf.cast(labels >= 0, tf.float32)
            loss = tf.reduce_sum(losses * weights) / tf.reduce_sum(weights)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        return loss

    for _ in range(args.steps):
        speed = train_speeds[rng.integers(len(train_speeds))]
        clips = make_clips(rng, args.batch, speed, spec)
        loss = train_step(clips["features"], clips["labels"])
    return model, float(loss)


def predictor(model):
    """A `tf.function`: features `[B, T, H, W, C]` -> predicted classes `[B, T, H, W]`."""
    return tf.function(lambda x: tf.argmax(model(x, training=False), axis=-1))


def evaluate(predict, clips, batch=32):
    """Hidden-frame accuracy of `predict` (see `predictor`) on `make_clips` output.

    Returns:
      `(accuracy, by_distance)`: a float in [0, 1], and a list `[T - 1]` of the
      accuracy 1, 2, ... frames away from the cue (None where nothing was counted).
    """
    correct = counted = 0
    near, seen = 0, 0
    for start in range(0, len(clips["labels"]), batch):
        part = {key: value[start : start + batch] for key, value in clips.items()}
        predictions = predict(part["features"]).numpy()
        c, n = hidden_accuracy(predictions, part["labels"], part["hidden"])
        correct, counted = correct + c, counted + n
        c, n = accuracy_by_distance(predictions, part["labels"], part["hidden"],
                                    part["distance"], part["features"].shape[1])
        near, seen = near + c, seen + n
    by_distance = [float(c / n) if n else None for c, n in zip(near[1:], seen[1:])]
    return correct / max(counted, 1), by_distance


def coefficient_stats(clips, k=2, affinity="authors", power=DEFAULT_AFFINITY_POWER):
    """Peakedness of the forward MatchTrans coefficients at the objects' centre cells.

    For every object and frame t >= 1, the coefficients of F_t's object-centre cell
    (skipped where another object is in front of it) over the
    window of F_{t-1}: their entropy (nats; a uniform 5x5 window is ln 25 = 3.22), the
    largest weight (uniform: 0.04), the weight on the true displacement, and how often
    the largest weight sits on the true displacement (counted only where that
    displacement is inside the window).

    Args:
      clips: `make_clips` output (`features`, `cells`, and `labels` with `classes`
        for the occlusion check when present).
      k: int. Window radius. Defaults to 2.
      affinity: str. `"authors"` and `"power"` use
        `stmn_tf.ops.match_trans_coefficients`, the layers' own (with
        `affinity_power` 1 and `power`), `"centred"` `sharpened_coefficients`.
      power: float. The affinity power of `"power"`. Defaults to 4.0.

    Returns:
      dict of floats: `entropy`, `max_weight`, `true_weight`, `argmax_on_true`
      (fraction of reachable displacements), `reachable` (fraction of displacements
      inside the window).
    """
    features = clips["features"]
    cells = clips["cells"]
    b_, t_ = features.shape[:2]
    current = features[:, 1:].reshape((-1,) + features.shape[2:])
    previous = features[:, :-1].reshape((-1,) + features.shape[2:])
    if affinity in ("authors", "power"):
        coefficients = ops.match_trans_coefficients(
            current, previous, k=k, implementation="tf",
            affinity_power=power if affinity == "power" else 1.0)
    else:
        coefficients = sharpened_coefficients(current, previous, k, affinity)
    coefficients = coefficients.numpy().reshape(b_, t_ - 1, *coefficients.shape[1:])
    side = 2 * k + 1
    entropy, largest, true_weight, hits, reachable = [], [], [], [], []
    for b, j, t in np.ndindex(b_, cells.shape[1], t_):
        if t == 0:
            continue
        y, x = cells[b, j, t]
        if "labels" in clips and clips["labels"][b, t, y, x] != clips["classes"][b, j]:
            continue  # another object in front
        c = coefficients[b, t - 1, y, x]
        dy, dx = cells[b, j, t - 1] - cells[b, j, t]  # where the object came from
        positive = c[c > 0]
        entropy.append(float(-(positive * np.log(positive)).sum()))
        largest.append(float(c.max()))
        inside = abs(dy) <= k and abs(dx) <= k
        reachable.append(inside)
        if inside:
            index = (dy + k) * side + (dx + k)
            true_weight.append(float(c[index]))
            hits.append(int(np.argmax(c)) == index)
    return {
        "entropy": float(np.mean(entropy)),
        "max_weight": float(np.mean(largest)),
        "true_weight": float(np.mean(true_weight)) if true_weight else None,
        "argmax_on_true": float(np.mean(hits)) if hits else None,
        "reachable": float(np.mean(reachable)),
    }


def _fmt(value, scale, spec):
    return "-" if value is None else format(scale * value, spec)


def write_plot(path, speeds, per_seed, chance):
    """Accuracy against speed per variant: the mean of the seeds, bars from min to max.

    Args:
      path: str. A `.png` file, written through a temporary name.
      speeds: list of floats.
      per_seed: dict variant -> `[len(speeds)][seeds]` accuracies in [0, 1].
      chance: float.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for variant, rows in per_seed.items():
        values = 100 * np.asarray(rows, dtype=float)  # [speeds, seeds]
        mean = values.mean(axis=1)
        bars = np.stack([mean - values.min(axis=1), values.max(axis=1) - mean])
        ax.errorbar(speeds, mean, yerr=bars, marker="o", capsize=3, label=variant)
    ax.axhline(100 * chance, color="grey", linestyle=":", label="chance")
    ax.axvline(2.0, color="grey", linestyle="--", linewidth=0.8)
    ax.text(2.02, 100 * chance + 2, "MatchTrans reach (k=2)", fontsize=8, color="grey")
    ax.set_xlabel("object speed v (cells per frame)")
    ax.set_ylabel("class accuracy, cue-hidden frames (%)")
    ax.set_title("mean of seeds; bars: min to max", fontsize=9)
    ax.set_ylim(0, 102)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    temporary = path + ".tmp.png"
    fig.savefig(temporary, dpi=120)
    plt.close(fig)
    os.replace(temporary, path)


def write_json(path, payload):
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        json.dump(payload, f, indent=1)
    os.replace(temporary, path)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speeds", type=float, nargs="+", default=list(DEFAULT_SPEEDS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--filters", type=int, default=16, help="memory channels per direction")
    parser.add_argument("--eval-clips", type=int, default=64)
    parser.add_argument("--size", type=int, default=ClipSpec.size)
    parser.add_argument("--frames", type=int, default=ClipSpec.frames)
    parser.add_argument("--noise", type=float, default=ClipSpec.noise)
    parser.add_argument("--objects", type=int, default=ClipSpec.objects)
    parser.add_argument("--features", choices=("relu", "signed"), default=ClipSpec.features)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS,
                        default=list(MAIN_VARIANTS) + ["static"])
    parser.add_argument("--train-per-speed", action="store_true",
                        help="train one model per speed (default: one on all speeds)")
    parser.add_argument("--affinity-power", type=float, default=DEFAULT_AFFINITY_POWER,
                        help="MatchTrans affinity power of the stmn_sharpened variant "
                             "(stmn is the authors' 1.0)")
    parser.add_argument("--prototypes", action="store_true",
                        help=f"also run the sharpened-MatchTrans prototypes {PROTOTYPES}")
    parser.add_argument("--output-dir", default=os.path.join("reports", "memory_transport"))
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        parser.error("--seeds and --steps must be >= 1")
    if not np.isfinite(args.affinity_power) or args.affinity_power <= 0:
        parser.error(f"--affinity-power must be a finite number > 0, got {args.affinity_power}")
    if args.prototypes:
        args.variants += [p for p in PROTOTYPES if p not in args.variants]
    return args


def main(argv=None):
    args = parse_args(argv)
    spec = ClipSpec(size=args.size, frames=args.frames, noise=args.noise,
                    features=args.features, objects=args.objects)
    speeds = [float(v) for v in args.speeds]
    variants = list(dict.fromkeys(args.variants))
    print(f"memory transport: {spec.size}x{spec.size} maps, {spec.frames} frames, "
          f"{spec.objects} objects of {spec.classes} classes, {spec.features} features, {args.steps} steps x "
          f"{args.batch} clips, {len(speeds)} speeds x {args.seeds} seeds x "
          f"{len(variants)} variants, "
          f"{'one model per speed' if args.train_per_speed else 'trained on all speeds'}",
          flush=True)

    results = {variant: [[None] * args.seeds for _ in speeds] for variant in variants}
    distances = {variant: [[None] * args.seeds for _ in speeds] for variant in variants}
    peakedness = {"authors": [], "power": [], "centred": []}
    eval_sets = []
    for i, speed in enumerate(speeds):
        # The same held-out clips for every variant and seed: paired comparisons.
        eval_sets.append(
            make_clips(np.random.default_rng([10_000, i]), args.eval_clips, speed, spec)
        )
        for affinity, rows in peakedness.items():
            rows.append(coefficient_stats(eval_sets[i], affinity=affinity,
                                          power=args.affinity_power))
    # One model per speed (--train-per-speed) or one per variant and seed on all speeds.
    groups = [[i] for i in range(len(speeds))] if args.train_per_speed else [
        list(range(len(speeds)))]
    runs = len(groups) * args.seeds * len(variants)
    started, done = time.perf_counter(), 0
    for group in groups:
        for seed in range(args.seeds):
            for variant in variants:
                run_start = time.perf_counter()
                model, loss = train(variant, [speeds[i] for i in group], seed, spec, args)
                predict = predictor(model)
                for i in group:
                    results[variant][i][seed], distances[variant][i][seed] = evaluate(
                        predict, eval_sets[i]
                    )
                done += 1
                elapsed = time.perf_counter() - started
                scores = " ".join(f"v={speeds[i]:g}: {100 * results[variant][i][seed]:.1f}"
                                  for i in group)
                print(f"[{done}/{runs}] seed={seed} {variant:<18} loss {loss:.3f}; "
                      f"hidden-frame accuracy % {scores}  "
                      f"({time.perf_counter() - run_start:.0f} s; {elapsed / 60:.1f} min "
                      f"elapsed, ~{elapsed / done * (runs - done) / 60:.1f} min left)",
                      flush=True)

    mean = {v: [float(np.mean(r)) for r in results[v]] for v in variants}
    spread = {v: [float(np.max(r) - np.min(r)) for r in results[v]] for v in variants}
    chance = 1.0 / spec.classes

    def mean_over_seeds(rows):
        values = np.array([[np.nan if a is None else a for a in row] for row in rows])
        return [None if np.isnan(m) else round(float(m), 4) for m in np.nanmean(values, 0)]

    by_distance = {v: [mean_over_seeds(distances[v][i]) for i in range(len(speeds))]
                   for v in variants}

    print()
    print(f"Class accuracy (%) at the object's cells in cue-hidden frames, mean of "
          f"{args.seeds} seeds (max - min); chance {100 * chance:.0f}%")
    header = f"{'v':>5} " + " ".join(f"{v:>20}" for v in variants)
    print(header)
    print("-" * len(header))
    for i, speed in enumerate(speeds):
        print(f"{speed:>5g} " + " ".join(
            f"{f'{100 * mean[v][i]:.1f} ({100 * spread[v][i]:.1f})':>20}" for v in variants))
    print()
    print("MatchTrans coefficients at the object's centre, forward step t-1 -> t "
          "(uniform 5x5: entropy 3.22 nats, largest 0.04)")
    header = (f"{'v':>5} {'affinity':>9} {'entropy':>8} {'largest':>8} {'on true':>8} "
              f"{'argmax=true':>12} {'reachable':>10}")
    print(header)
    print("-" * len(header))
    for i, speed in enumerate(speeds):
        for affinity, rows in peakedness.items():
            row = rows[i]
            print(f"{speed:>5g} {affinity:>9} {row['entropy']:>8.2f} {row['max_weight']:>8.3f} "
                  f"{_fmt(row['true_weight'], 1, '.3f'):>8} "
                  f"{_fmt(row['argmax_on_true'], 100, '.0f'):>11}% "
                  f"{100 * row['reachable']:>9.0f}%")

    print()
    print("Accuracy (%) by frames from the cue (1, 2, ...), mean of seeds")
    for i, speed in enumerate(speeds):
        print(f"{speed:>5g} " + " ".join(
            f"{v}: " + "/".join(_fmt(a, 100, '.0f') for a in by_distance[v][i])
            for v in variants if v != "static"))

    os.makedirs(args.output_dir, exist_ok=True)
    main_variants = [v for v in MAIN_VARIANTS if v in variants]
    payload = {
        "speeds": speeds,
        "accuracy": {v: [round(a, 4) for a in mean[v]] for v in main_variants},
        "seeds": args.seeds,
        "spread": {v: [round(a, 4) for a in spread[v]] for v in variants},
        "other_accuracy": {v: [round(a, 4) for a in mean[v]] for v in variants
                           if v not in main_variants},
        "per_seed": {v: results[v] for v in variants},
        "by_distance_to_cue": by_distance,
        "chance": chance,
        "coefficients": {a: [{k: None if x is None else round(x, 4) for k, x in row.items()}
                             for row in rows]
                         for a, rows in peakedness.items()},
        "config": {**dataclasses.asdict(spec), "steps": args.steps, "batch": args.batch,
                   "learning_rate": args.learning_rate, "filters": args.filters,
                   "eval_clips": args.eval_clips, "affinity_power": args.affinity_power,
                   "train_per_speed": args.train_per_speed},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json(os.path.join(args.output_dir, "results.json"), payload)
    write_plot(os.path.join(args.output_dir, "accuracy.png"), speeds,
               {v: results[v] for v in variants}, chance)
    print(f"\nwrote {args.output_dir}/results.json and accuracy.png "
          f"({payload['seconds'] / 60:.1f} min)")
    print(json.dumps(payload, separators=(", ", ": ")))
    return payload


if __name__ == "__main__":
    main()
