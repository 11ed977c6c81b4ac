"""Frame sources for video inference, and the data config's resizing of single frames.

A source yields `SourceFrame(index, image)`: `image` uint8 RGB `[H, W, 3]`, `index` the
frame's position in the file or folder. Corrupt frames are skipped and their indices
listed in `source.skipped` (so indices can have gaps); a source with no readable frame
raises `FrameSourceError`. Iterating a source again decodes the frames again (detect.py
decodes twice: once to detect, once to draw the linked detections).

- `VideoFileSource`: any file OpenCV's FFmpeg backend reads (mp4, avi, ...). A failed
  read before the container's declared frame count is a corrupt frame (OpenCV then
  continues with the next one); so is a frame whose size differs from the first's.
- `FolderSource`: the image files of a folder, in name order (VID's `000000.JPEG`, ...);
  a file OpenCV cannot decode is a corrupt frame.

`FrameResizer` applies `DataConfig.image_size` exactly as the eval pipeline does
(`stmn_tf.data.pipeline.resized_size` / `padded_size`, bilinear resize, zero padding at
the bottom and right).
"""

import collections
import os

import cv2
import numpy as np
import tensorflow as tf

from stmn_tf.data import pipeline

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

SourceFrame = collections.namedtuple("SourceFrame", ["index", "image"])


class FrameSourceError(ValueError):
    """A video or folder that cannot be read, or that has no readable frame."""


class VideoFileSource:
    """The frames of a video file, decoded with OpenCV.

    Args:
        path: str. A video file (mp4, avi, ...).

    Attributes:
        fps: frames per second the container declares (10.0 when it declares none).
        declared_frames: the container's frame count (may be approximate; -1 unknown).
        skipped: indices of the corrupt frames of the last iteration.
    """

    def __init__(self, path):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist")
        capture = cv2.VideoCapture(path)
        try:
            if not capture.isOpened():
                raise FrameSourceError(f"{path}: OpenCV cannot open it as a video "
                                       "(unsupported format or corrupt file)")
            fps = capture.get(cv2.CAP_PROP_FPS)
            self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else 10.0
            self.declared_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            capture.release()
        self.path = path
        self.skipped = []

    def __iter__(self):
        self.skipped = []
        capture = cv2.VideoCapture(self.path)
        if not capture.isOpened():
            raise FrameSourceError(f"{self.path}: OpenCV cannot open it as a video")
        index, count, shape = 0, 0, None
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    # A failed read before the declared end is a corrupt frame: OpenCV
                    # goes on with the next one. At or past the end, the video is over.
                    if index < self.declared_frames:
                        self.skipped.append(index)
                        index += 1
                        continue
                    break
                if shape is None:
                    shape = frame.shape
                if frame.shape != shape or frame.ndim != 3:
                    self.skipped.append(index)
                else:
                    count += 1
                    yield SourceFrame(index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                index += 1
        finally:
            capture.release()
        if count == 0:
            raise FrameSourceError(f"{self.path}: the video has no readable frames "
                                   f"({len(self.skipped)} corrupt)")


class FolderSource:
    """The image files of a folder, in name order, as the frames of one video.

    Args:
        path: str. A folder of images (extensions in `IMAGE_EXTENSIONS`).
        fps: float. The frame rate to write annotated videos at. Defaults to 10.
    """

    def __init__(self, path, fps=10.0):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{path} is not a folder")
        self.path = path
        self.fps = float(fps)
        self.files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not self.files:
            raise FrameSourceError(f"{path}: the folder has no image files "
                                   f"(extensions {', '.join(IMAGE_EXTENSIONS)})")
        self.declared_frames = len(self.files)
        self.skipped = []

    def __iter__(self):
        self.skipped = []
        count, shape = 0, None
        for index, name in enumerate(self.files):
            data = np.fromfile(os.path.join(self.path, name), np.uint8)
            frame = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
            if frame is not None and shape is None:
                shape = frame.shape
            if frame is None or frame.shape != shape:
                self.skipped.append(index)
                continue
            count += 1
            yield SourceFrame(index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        if count == 0:
            raise FrameSourceError(f"{self.path}: no readable frames "
                                   f"({len(self.skipped)} corrupt files)")


def open_frame_source(path):
    """A `FolderSource` for a folder, a `VideoFileSource` for a file."""
    if os.path.isdir(path):
        return FolderSource(path)
    return VideoFileSource(path)


class FrameResizer:
    """One decoded frame -> the model's input, as the eval pipeline prepares it.

    Args:
        image_size_config: `stmn_tf.data.config.ImageSizeConfig`.

    Call arguments:
        image: uint8 (or float) RGB `[H, W, 3]`.

    Returns:
        `(image float32 [Hp, Wp, 3] in [0, 255], image_size (h, w), original_size (H, W))`:
        the resized frame at the top left of the zero-padded canvas.
    """

    def __init__(self, image_size_config):
        self.image_size_config = image_size_config
        self.padded_size = tuple(pipeline.padded_size(image_size_config))
        self._resize = tf.function(self._resize_fn, reduce_retracing=True)

    def _resize_fn(self, image):
        return pipeline.resize_and_pad(image, self.image_size_config)

    def __call__(self, image):
        image = np.asarray(image)
        padded, size = self._resize(tf.convert_to_tensor(image))
        return padded.numpy(), tuple(int(s) for s in size.numpy()), tuple(image.shape[:2])
