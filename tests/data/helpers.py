"""Small data sets for the data tests."""

import os

import cv2
import numpy as np

from stmn_tf.data import config as config_lib

# Non-square frames so that a mix-up of height and width shows.
TINY = dict(num_train_videos=3, num_val_videos=2, num_test_videos=2, num_det_images=4,
            height=64, width=80,
            min_frames=6, max_frames=9, num_classes=4, max_objects=3, empty_video_probability=0.0,
            min_object_size=16, max_object_size=28, max_speed=3.0, num_shards=2)


def tiny_config(**overrides):
    return config_lib.SyntheticConfig(dict(TINY, **overrides))


def write_jpeg(path, height, width, seed=0):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    with open(path, "wb") as f:
        f.write(data.tobytes())


def voc_xml(width, height, objects, with_track_ids=True):
    """objects: [(synset, xmin, ymin, xmax, ymax, trackid)]."""
    parts = [f"<annotation><size><width>{width}</width><height>{height}</height></size>"]
    for synset, xmin, ymin, xmax, ymax, track in objects:
        track_xml = f"<trackid>{track}</trackid>" if with_track_ids else ""
        parts.append(f"<object>{track_xml}<name>{synset}</name><bndbox><xmin>{xmin}</xmin>"
                     f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>"
                     f"<occluded>0</occluded><generated>0</generated></object>")
    parts.append("</annotation>")
    return "".join(parts)


def write_vid_snippet(root, split, snippet, frames, width=48, height=32):
    """frames: list of object lists (see voc_xml); writes JPEGs and xmls."""
    for t, objects in enumerate(frames):
        write_jpeg(os.path.join(root, "Data", "VID", split, snippet, f"{t:06d}.JPEG"), height, width, t)
        path = os.path.join(root, "Annotations", "VID", split, snippet, f"{t:06d}.xml")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(voc_xml(width, height, objects))
