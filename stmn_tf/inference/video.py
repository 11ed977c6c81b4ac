"""Video inference: STMN's test-time sliding windows, streamed, and a forward-only
online mode (paper Secs. 3.4 and 4).

Both runners take frames one at a time (`push`) and give back each frame's detections
as soon as they are final, so a video of any length runs in bounded memory; `finish()`
ends a video (and resets the runner for the next one); `run(frames)` does both over an
iterable. Frames are `PreparedFrame`s: the model's input (resized and padded as the
data config says, see `frames.FrameResizer` or the eval pipeline) plus the sizes needed
to map boxes back to the original frame. Outputs are `FrameDetections` dicts with pixel
`xmin, ymin, xmax, ymax` boxes in the original frame, the format of
`stmn_tf.evaluation.vid_eval` and the linkers.

`WindowedVideoDetector` (the paper's test procedure):

- Frames are split into `stride` interleaved sub-sequences (frame p goes to p % stride),
  and windows of T frames slide over each with `step`; a frame collects the detections
  of every window that covers it, concatenated by window start and then merged by
  per-class NMS (`merge_iou`; None keeps the plain union). The paper only says "we
  slide the testing window and detect on all frames within each sliding window"; the
  authors' code (`ImageDetect:detect_VID_CENTER_OVERLAP`, their default for STMN)
  slides by one frame, the default `step=1`. Whatever the step, the last window of a
  sub-sequence ends at its end, and a sub-sequence shorter than T is one window of its
  own (as in the authors' code).
- Streaming: a window is run as soon as its last frame has arrived; the windows that
  depend on the video's length (the last, end-aligned window of each sub-sequence, or
  the single short window of a sub-sequence shorter than T) are run by `finish()`. A
  window spans (T - 1) * stride + 1 consecutive frames and an end-aligned one starts at
  most T * stride - 1 frames before the last, so the runner keeps the last
  `stride * T` frames' encodings (the buffer; `max_buffered` records its peak), plus
  those that the at most `batch_windows - 1` queued windows still hold. A frame is
  final, and given back, once frame `p + stride * T` has arrived and its windows have
  run (no later window can cover it).
- What is buffered is the frame's backbone features `F_t` (`cache="features"`): the
  backbone runs once per frame, not once per window covering it (T times with step 1);
  `detect_from_features` on a stack of windows gives exactly `model.detect` on the
  stacked images since everything before the memory is per frame. `cache="images"`
  buffers the padded frames instead (less memory at large sizes, T times the backbone).
- Batching: windows of the same length are stacked, `batch_windows` per model call.
  For a static R-FCN this is exact. For STMN it is not: BN* (paper Sec. 3.2) takes its
  statistics over the whole input tensor, batch included, so windows batched together
  are normalised together; `batch_windows=1` (the config's default) reproduces
  `model.detect` on each window exactly.
- A static R-FCN has no windows: window 1, stride 1, frames batched `batch_windows` at
  a time.

`OnlineVideoDetector` (forward-only, for streams): the STMN memory carried from frame to
frame, one memory per sub-sequence (`stride` of them, frame p updates memory p % stride,
so that the memory sees frames as far apart as in training; stride 1 = every frame).
It calls the model's `step(frame, state)` (`TwoStageDetector.step`, the one causal
frame-by-frame path, which the `stream` serving signature runs too), one state per
sub-sequence, starting from `initial_state`:

- a forward-direction STMN (`memory_direction="forward"`) then gives exactly what the
  model computes over the whole sub-sequence (`model.detect` on the clip);
- a bidirectional STMN has no backward memory online: its backward cell reads only the
  current frame (from zero memory). That is exactly the bidirectional model's output
  for the last frame of a clip that starts at the sub-sequence's first frame.
"""

import numpy as np
import tensorflow as tf

from stmn_tf.ops import box_ops
from stmn_tf.ops.seq_nms import nms_xyxy

CACHES = ("features", "images")
MERGES = ("all", "center")


class PreparedFrame(dict):
    """One frame ready for the model.

    Keys: `image` float32 `[Hp, Wp, 3]` RGB [0, 255] (the padded model input);
    `image_size` (h, w) of the resized frame inside it; `original_size` (H, W);
    `frame_index` (the frame's index in its video); any other keys (ground truth,
    video id) are passed through to the frame's `FrameDetections` as `"meta"`.
    """


def prepared_frame(image, image_size, original_size, frame_index, **meta):
    return PreparedFrame(image=image, image_size=tuple(int(s) for s in image_size),
                         original_size=tuple(int(s) for s in original_size),
                         frame_index=int(frame_index), meta=meta)


def _inside(boxes, scores, labels):
    """Drops boxes left with no area by clipping (they lay in the padding)."""
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], np.asarray(scores)[keep], np.asarray(labels)[keep]


def merge_detections_xyxy(boxes, scores, labels, iou_threshold):
    """Per-class greedy NMS over one frame's concatenated detections; by decreasing score."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if iou_threshold is None or len(scores) == 0:
        keep = np.lexsort((np.arange(len(scores)), -scores))
    else:
        keep = np.concatenate([np.flatnonzero(labels == c)[nms_xyxy(boxes[labels == c],
                                                                    scores[labels == c],
                                                                    iou_threshold)]
                               for c in np.unique(labels)])
        keep = keep[np.lexsort((keep, -scores[keep]))]
    return boxes[keep], scores[keep], labels[keep]


def _unpack(outputs, b, t):
    """The valid detections of window b, position t of a `predict_step` dict (NumPy)."""
    n = int(outputs["num_detections"][b, t])
    return (outputs["detection_boxes"][b, t, :n], outputs["detection_scores"][b, t, :n],
            outputs["detection_classes"][b, t, :n])


class ModelWindowAdapter:
    """What the windowed runner needs from a detector: per-frame encoding and detection
    on stacks of windows. Tests replace it with a fake of the same two methods.

    Args:
        model: an `RFCN` or `STMN` (`stmn_tf.models`).
        cache: `"features"` (buffer `F_t`, backbone once per frame) or `"images"`.
    """

    def __init__(self, model, cache="features"):
        if cache not in CACHES:
            raise ValueError(f"cache must be one of {CACHES}, got {cache!r}")
        self.model = model
        self.cache = cache
        self._encode = tf.function(lambda images: model.extract_features(images[:, None])[:, 0],
                                   reduce_retracing=True)
        if cache == "features":
            self._detect = tf.function(model.detect_from_features, reduce_retracing=True)
        else:
            self._detect = tf.function(lambda images, size: model.detect(images),
                                       reduce_retracing=True)

    def encode(self, images):
        """`[n, Hp, Wp, 3]` -> per-frame arrays `[n, ...]` to buffer."""
        if self.cache == "images":
            return np.asarray(images, np.float32)
        return self._encode(tf.convert_to_tensor(images, tf.float32)).numpy()

    def detect(self, windows, padded_size):
        """`[B, T, ...]` stacked encodings -> `predict_step` dict of NumPy arrays."""
        outputs = self._detect(tf.convert_to_tensor(windows),
                               tf.constant(padded_size, tf.int32))
        return {k: v.numpy() for k, v in outputs.items()}


class WindowedVideoDetector:
    """Sliding-window detection over a streamed video (see the module docstring).

    Args:
        detector: an `RFCN` / `STMN` model, or an object with the `encode(images)` and
            `detect(windows, padded_size)` methods of `ModelWindowAdapter`.
        window_length: T. Defaults to 11. Forced to 1 for a static R-FCN.
        stride: sub-sequence stride. Defaults to 10. Forced to 1 for a static R-FCN.
        step: window step inside a sub-sequence. Defaults to 1 (the authors').
        batch_windows: windows per model call. Defaults to 1.
        merge_iou: per-class NMS threshold merging a frame's detections from its
            windows; None: the plain concatenation. Defaults to 0.3.
        merge: which covering windows a frame takes its detections from: `"all"`
            (every window that covers it, the authors' code) or `"center"` (only the
            window in which it sits nearest the centre, ties to the earlier window).
            Defaults to `"all"`.
        cache: `"features"` or `"images"` (models only). Defaults to `"features"`.

    Attributes:
        windows_run: the windows of the current / last video, as lists of frame
            positions (0-based order of arrival), in the order they were run.
        max_buffered: the most frame encodings held at once in the current video.
        model_calls: model calls in the current video.
    """

    def __init__(self, detector, window_length=11, stride=10, step=1, batch_windows=1,
                 merge_iou=0.3, cache="features", merge="all"):
        if merge not in MERGES:
            raise ValueError(f"merge must be one of {MERGES}, got {merge!r}")
        if hasattr(detector, "detect_from_features"):
            if not detector.has_memory:
                window_length, stride = 1, 1  # R-FCN: per frame
            detector = ModelWindowAdapter(detector, cache)
        for name, value in (("window_length", window_length), ("stride", stride),
                            ("step", step), ("batch_windows", batch_windows)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.detector = detector
        self.window_length = window_length
        self.stride = stride
        self.step = step
        self.batch_windows = batch_windows
        self.merge_iou = merge_iou
        self.merge = merge
        self.buffer_limit = window_length * stride
        self.reset()

    def reset(self):
        self._count = 0
        self._sub_lengths = [0] * self.stride
        self._encoded = {}  # position -> encoding, the last stride * T frames
        self._frames = {}  # position -> PreparedFrame without its image
        # position -> [(window start, distance from the window's centre, boxes, scores, labels)]
        self._collected = {}
        self._pending = {}  # window length -> queued windows
        self._pending_count = {}  # position -> queued windows covering it
        self._next = 0  # next position to give back
        self._padded_size = None
        self.windows_run = []
        self.max_buffered = 0
        self.model_calls = 0

    # -- streaming ------------------------------------------------------------

    def push(self, frame):
        """Adds the next frame; returns the `FrameDetections` that became final."""
        position = self._count
        self._count += 1
        image = np.asarray(frame["image"])
        if self._padded_size is None:
            self._padded_size = tuple(image.shape[:2])
        elif tuple(image.shape[:2]) != self._padded_size:
            raise ValueError(f"frame {frame.get('frame_index')} has input size {image.shape[:2]}, "
                             f"the video's first frame {self._padded_size}")
        # Frames older than stride * T are in no window still to come (an end-aligned
        # window starts at most stride * T - 1 frames before the last one).
        self._encoded.pop(position - self.buffer_limit, None)
        self._encoded[position] = self.detector.encode(image[None])[0]
        self._frames[position] = {k: v for k, v in frame.items() if k != "image"}
        self._collected[position] = []

        sub = position % self.stride
        k = self._sub_lengths[sub]  # the frame's place in its sub-sequence
        self._sub_lengths[sub] += 1
        t = self.window_length
        if k + 1 >= t and (k + 1 - t) % self.step == 0:
            self._queue([position - (t - 1 - j) * self.stride for j in range(t)])
        self.max_buffered = max(self.max_buffered, len(self._encoded))
        return self._emit(final=False)

    def finish(self):
        """Runs the windows that depend on the video's length, returns the remaining
        frames' `FrameDetections`, and resets the runner for the next video."""
        t = self.window_length
        for sub, length in enumerate(self._sub_lengths):
            positions = [sub + j * self.stride for j in range(length)]
            if 0 < length < t:
                self._queue(positions)  # a short sub-sequence is one window
            elif length > t and (length - t) % self.step:
                self._queue(positions[-t:])  # the last window ends at the end
        for length in list(self._pending):
            self._run(length)
        out = self._emit(final=True)
        stats = (self.windows_run, self.max_buffered, self.model_calls)
        self.reset()
        self.windows_run, self.max_buffered, self.model_calls = stats
        return out

    def run(self, frames):
        """Yields the `FrameDetections` of one video's `PreparedFrame`s, in order."""
        for frame in frames:
            yield from self.push(frame)
        yield from self.finish()

    # -- internals ------------------------------------------------------------

    def _queue(self, window):
        queue = self._pending.setdefault(len(window), [])
        # The window holds its frames' encodings: the buffer may drop them before a
        # batch is full.
        queue.append((window, [self._encoded[p] for p in window]))
        for position in window:
            self._pending_count[position] = self._pending_count.get(position, 0) + 1
        if len(queue) >= self.batch_windows:
            self._run(len(window))

    def _run(self, length):
        queued = self._pending.pop(length, [])
        if not queued:
            return
        stack = np.stack([np.stack(encodings) for _, encodings in queued])  # [B, T, ...]
        outputs = self.detector.detect(stack, self._padded_size)
        self.model_calls += 1
        for b, (window, _) in enumerate(queued):
            self.windows_run.append(list(window))
            for t, position in enumerate(window):
                offset = abs(t - (len(window) - 1) / 2)
                self._collected[position].append((window[0], offset) + _unpack(outputs, b, t))
                self._pending_count[position] -= 1

    def _emit(self, final):
        out = []
        while self._next < self._count:
            position = self._next
            if not final and (position + self.buffer_limit >= self._count
                              or self._pending_count.get(position, 0)):
                break
            out.append(self._finalise(position))
            self._next += 1
        return out

    def _finalise(self, position):
        parts = sorted(self._collected.pop(position), key=lambda part: part[0])
        num_windows = len(parts)
        if self.merge == "center" and parts:
            parts = [min(parts, key=lambda part: part[1])]  # min keeps the first of ties
        self._pending_count.pop(position, None)
        frame = self._frames.pop(position)
        boxes = np.concatenate([p[2] for p in parts]) if parts else np.zeros((0, 4))
        scores = np.concatenate([p[3] for p in parts]) if parts else np.zeros(0)
        labels = np.concatenate([p[4] for p in parts]) if parts else np.zeros(0, np.int64)
        boxes = box_ops.canvas_yxyx_to_frame_xyxy(boxes, self._padded_size, frame["image_size"],
                                                     frame["original_size"])
        boxes, scores, labels = merge_detections_xyxy(*_inside(boxes, scores, labels), self.merge_iou)
        return frame_detections(position, frame, boxes, scores, labels, num_windows)


def frame_detections(position, frame, boxes, scores, labels, num_windows=1):
    """A frame's output dict: `"boxes"` `[N, 4]` pixel xyxy in the original frame,
    `"scores"` `[N]`, `"labels"` `[N]` 1..C (by decreasing score), `"position"` (order of
    arrival), `"frame_index"`, `"original_size"`, `"num_windows"` (windows that covered
    the frame) and the frame's `"meta"`."""
    return {"boxes": boxes, "scores": np.asarray(scores, np.float64),
            "labels": np.asarray(labels, np.int64), "position": position,
            "frame_index": frame.get("frame_index", position),
            "original_size": frame.get("original_size"), "num_windows": num_windows,
            "meta": frame.get("meta", {})}


# ----------------------------------------------------------------------------------
# Online (forward-only) mode.


class OnlineVideoDetector:
    """Forward-only detection, frame by frame, memory carried over (module docstring).

    Args:
        model: an `STMN` (or an `RFCN`: plain per-frame detection).
        stride: memories kept, frame p updating memory p % stride. Defaults to 1.

    `push(frame)` returns the frame's `FrameDetections` at once; `finish()` returns
    `[]` and resets the memories; `run(frames)` as `WindowedVideoDetector.run`.
    """

    def __init__(self, model, stride=1):
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.model = model
        self.stride = stride
        self._step = tf.function(model.step, reduce_retracing=True)
        self.reset()

    def reset(self):
        self._count = 0
        self._states = {}  # sub-sequence -> the model's state after its last frame

    def push(self, frame):
        position = self._count
        self._count += 1
        image = np.asarray(frame["image"], np.float32)
        sub = position % self.stride
        state = self._states.get(sub)
        if state is None:  # a sub-sequence's first frame: the paper's first step
            state = self.model.initial_state(1, *image.shape[:2])
        outputs, self._states[sub] = self._step(tf.convert_to_tensor(image[None]), state)
        outputs = {k: v.numpy()[:, None] for k, v in outputs.items()}  # [1, 1, ...]
        boxes, scores, labels = _unpack(outputs, 0, 0)
        boxes = box_ops.canvas_yxyx_to_frame_xyxy(boxes, image.shape[:2], frame["image_size"],
                                                     frame["original_size"])
        boxes, scores, labels = merge_detections_xyxy(*_inside(boxes, scores, labels), None)
        return [frame_detections(position, frame, boxes, scores, labels)]

    def finish(self):
        self.reset()
        return []

    def run(self, frames):
        for frame in frames:
            yield from self.push(frame)
        yield from self.finish()
