"""The embedded synthetic VID-like data set: seeded videos where memory matters.

Every object has the same kind of body: a silhouette drawn from a small shared family
(ellipse, rounded square, squircle), a random greyish colour and a random blotchy
texture, none of which depends on its class. The class shows only as a pattern on the
object's "front" (stripes, checks, dots, ...) in the class's ink colour, and the object
turns (once every 8-16 frames): the front faces the camera while cos(viewpoint) >
cue_threshold, a third of the time, in runs of a few frames. In the other frames a
single frame cannot tell the class, but the same track a few frames earlier or later
can. On top of that: heavy occlusion (60-85% of the box hidden behind a patch of
background for 3-6 frames), bursts of camera-shake motion blur that wipe out the
pattern, scale changes (+-10..35%), 0 to `max_objects` objects bouncing around a
cluttered panning background, and sensor noise.

Motion: objects move at `min_speed` to `max_speed` pixels a frame (default 1.2 to 4),
the background pans at `background_speed`; between frames sampled 1 in 2 an object
moves at most about 11 px, well inside MatchTrans' 5x5-cell window at stride 16. The
ablation's motion preset (`python -m stmn_tf.ablation --preset motion`) draws 8 to 16
px a frame: one to two feature cells between sampled frames.

Entry points:
    generate_video(config, split, index) -> (frames uint8 [F, H, W, 3] RGB, annotations)
    make_video(config, split, index) -> schema.Video (JPEG frames)
    write_tfrecords(prefix, config, split) -> shard paths
    write_ilsvrc_layout(root, config, split) -> writes Data/VID, Annotations/VID, ImageSets/VID
    ensure_synthetic_dataset(directory, config) -> {split: file pattern}, generating
        the splits that are missing or were made with other parameters.
    class_names(config), class_list(config) -> names / (synset, name) pairs, label 1..C.
"""

import copy
import functools
import hashlib
import json
import os

import cv2
import numpy as np

from stmn_tf.data import config as config_lib
from stmn_tf.data import convert_lib
from stmn_tf.data import schema

PATTERNS = ("hstripes", "vstripes", "checker", "dots", "diagonal", "rings", "cross",
            "antidiagonal")
# The class's pattern is drawn in the class's ink: a tiny CNN at stride 16 learns a
# saturated colour in a few hundred steps, the stripes' geometry alone far more slowly.
INKS = ((230, 40, 40), (40, 200, 60), (50, 80, 235), (235, 215, 40), (220, 50, 220),
        (40, 215, 225), (245, 140, 30), (130, 50, 200))
SPLITS = {"train": 1, "val": 2, "test": 3, "det": 4}
DATASET_NAME = "synthetic"
# Bumped whenever the drawing changes, so that data made by older code is remade.
GENERATOR_VERSION = 4
_SHAPE_EXPONENTS = (2.0, 3.0, 6.0)  # |u|^p + |v|^p <= 1: ellipse .. rounded square


def class_names(config):
    if not 1 <= config.num_classes <= len(PATTERNS):
        raise ValueError(f"num_classes must be in 1..{len(PATTERNS)}, got {config.num_classes}")
    return PATTERNS[:config.num_classes]


def class_list(config):
    """(synset, name) pairs; the made-up synsets n90000001.. stand in for WordNet ids."""
    return tuple((f"n{90000001 + i}", name) for i, name in enumerate(class_names(config)))


def _num_videos(config, split):
    return {"train": config.num_train_videos, "val": config.num_val_videos,
            "test": config.num_test_videos, "det": config.num_det_images}[split]


def _rng(config, split, index):
    # One generator per video: a video does not depend on how many others are made.
    return np.random.default_rng([config.seed * 1000 + SPLITS[split], index])


def _pattern(name, u, v):
    """Boolean class pattern on object coordinates u, v in [0, 1)."""
    if name == "hstripes":
        return np.sin(2 * np.pi * 4 * v) > 0
    if name == "vstripes":
        return np.sin(2 * np.pi * 4 * u) > 0
    if name == "checker":
        return (np.floor(4 * u) + np.floor(4 * v)) % 2 == 0
    if name == "dots":
        return (np.mod(4 * u, 1) - 0.5) ** 2 + (np.mod(4 * v, 1) - 0.5) ** 2 < 0.09
    if name == "diagonal":
        return np.sin(2 * np.pi * 3 * (u + v)) > 0
    if name == "rings":
        return np.sin(2 * np.pi * 4 * np.hypot(u - 0.5, v - 0.5)) > 0
    if name == "cross":
        return (np.abs(u - 0.5) < 0.13) | (np.abs(v - 0.5) < 0.13)
    if name == "antidiagonal":
        return np.sin(2 * np.pi * 3 * (u - v)) > 0
    raise ValueError(name)


def _smooth_noise(rng, height, width, cells, channels):
    coarse = rng.random((max(2, height // cells), max(2, width // cells), channels))
    return cv2.resize(coarse.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)


def _muted(rgb, saturation=0.35):
    """`rgb` pulled towards its grey level: the saturated inks stay the class cues' own."""
    grey = np.mean(rgb)
    return grey + saturation * (np.asarray(rgb, np.float64) - grey)


def _background(rng, height, width):
    """A cluttered canvas larger than the frame; the frame is a panning window on it."""
    base = _muted(rng.uniform(60, 190, size=3))
    canvas = base * (0.6 + 0.8 * _smooth_noise(rng, height, width, 24, 3))
    canvas = canvas.astype(np.float32)
    scale = max(height, width) / 128.0
    for _ in range(int(rng.integers(20, 40) * scale)):
        colour = tuple(float(c) for c in _muted(rng.uniform(30, 225, size=3)))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        size = int(rng.integers(3, 18) * scale) + 1
        kind = rng.integers(0, 3)
        if kind == 0:
            cv2.rectangle(canvas, (x, y), (x + size, y + int(rng.integers(2, 14) * scale)),
                          colour, -1)
        elif kind == 1:
            cv2.circle(canvas, (x, y), size // 2 + 1, colour, -1)
        else:
            end = (x + int(rng.integers(-30, 30) * scale), y + int(rng.integers(-30, 30) * scale))
            cv2.line(canvas, (x, y), end, colour, max(1, int(rng.integers(1, 3) * scale)))
    return canvas


def check_speeds(config):
    """Raises a ValueError naming `min_speed` / `max_speed` when they do not make a
    range of speeds (0 <= min_speed <= max_speed)."""
    if config.max_speed < 0:
        raise ValueError(f"max_speed must be >= 0, got {config.max_speed}")
    if config.min_speed is not None and not 0 <= config.min_speed <= config.max_speed:
        raise ValueError(f"min_speed must be in [0, max_speed = {config.max_speed}], "
                         f"got {config.min_speed}")


def _new_object(rng, config, label, track_id):
    size = rng.uniform(config.min_object_size, config.max_object_size)
    if config.min_speed is None:
        speed = rng.uniform(0.3, 1.0) * config.max_speed
    else:
        speed = rng.uniform(config.min_speed, config.max_speed)
    angle = rng.uniform(0, 2 * np.pi)
    # A greyish body (any brightness, a faint tint): the saturated class inks stand
    # out on it, and nothing about the body tells the class.
    body = rng.uniform(70, 190) + rng.uniform(-15, 15, size=3)
    return {
        "label": label, "track_id": track_id, "size": size,
        "aspect": float(rng.uniform(0.75, 1.33)),
        "exponent": float(rng.choice(_SHAPE_EXPONENTS)),
        "x": rng.uniform(size / 2, config.width - size / 2),
        "y": rng.uniform(size / 2, config.height - size / 2),
        "vx": speed * np.cos(angle), "vy": speed * np.sin(angle),
        "phase": rng.uniform(0, 2 * np.pi),
        # One full turn every min..max_turn_period frames.
        "turn": 2 * np.pi / rng.uniform(config.min_turn_period, config.max_turn_period)
                * rng.choice([-1, 1]),
        "scale_amplitude": rng.uniform(0.1, 0.35), "scale_period": rng.uniform(20, 60),
        "scale_phase": rng.uniform(0, 2 * np.pi),
        "body": body,
        "ink": np.array(INKS[label - 1], np.float64),
        "texture": 0.7 + 0.6 * _smooth_noise(rng, 32, 32, 8, 1)[..., None],
        "occlusion": None,
    }


def _render_object(frame, obj, cue_alpha, box, pattern):
    xmin, ymin, xmax, ymax = box
    h, w = ymax - ymin, xmax - xmin
    v, u = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    p = obj["exponent"]
    mask = np.abs(2 * u - 1) ** p + np.abs(2 * v - 1) ** p <= 1.0
    # Keep the box tight: the silhouette reaches the box on all four sides.
    mask[h // 2, :] = True
    mask[:, w // 2] = True
    texture = cv2.resize(obj["texture"], (w, h), interpolation=cv2.INTER_LINEAR)[..., None]
    colour = obj["body"] * texture  # [h, w, 3]
    if cue_alpha > 0:
        ink = _pattern(pattern, u, v)[..., None] * cue_alpha
        colour = colour * (1 - ink) + obj["ink"] * ink
    region = frame[ymin:ymax, xmin:xmax]
    region[mask] = colour[mask]


def generate_video(config, split, index):
    """Draws one video.

    Returns:
        frames: uint8 [F, H, W, 3] RGB.
        annotations: per frame a list of objects, each a dict with box (xmin, ymin,
            xmax, ymax) integer pixels on the continuous plane (the object covers
            pixel columns xmin..xmax-1), label 1..C, name, track_id, occluded (more
            than half hidden), cue_visible (the class pattern is shown), blurred.
    """
    rng = _rng(config, split, index)
    names = class_names(config)
    height, width = config.height, config.width
    # The "det" split is ImageNet DET's stand-in: still images of objects facing the
    # camera, unoccluded and sharp, where the class always shows (stage 1 trains on
    # VID and DET, as in the paper).
    still = split == "det"
    num_frames = 1 if still else int(rng.integers(config.min_frames, config.max_frames + 1))
    pan = rng.uniform(-1, 1, size=2) * config.background_speed
    margin = int(np.ceil(np.abs(pan).max() * num_frames)) + 2
    canvas = _background(rng, height + 2 * margin, width + 2 * margin)
    if rng.random() < config.empty_video_probability or config.max_objects == 0:
        num_objects = 0
    else:
        num_objects = int(rng.integers(1, config.max_objects + 1))
    objects = [_new_object(rng, config, int(rng.integers(1, len(names) + 1)), t)
               for t in range(num_objects)]
    for obj in objects:
        if still:
            obj["phase"] = rng.uniform(-0.5, 0.5)  # cos > 0.87: the pattern in full
            continue
        if rng.random() < config.occlusion_probability:
            length = int(rng.integers(3, 7))
            start = int(rng.integers(0, max(1, num_frames - length)))
            obj["occlusion"] = (start, start + length, int(rng.integers(0, 4)),
                                float(rng.uniform(0.6, 0.85)),
                                (int(rng.integers(0, 2 * margin + 1)),
                                 int(rng.integers(0, 2 * margin + 1))))
    blurred = np.zeros(num_frames, bool)
    blur_kernels = {}
    if not still and rng.random() < config.blur_probability:
        for _ in range(int(rng.integers(1, 3))):
            length = int(rng.integers(2, 5))
            start = int(rng.integers(0, max(1, num_frames - length)))
            kernel_size = int(rng.integers(7, 14)) * max(1, round(max(height, width) / 128))
            kernel = np.zeros((kernel_size, kernel_size), np.float32)
            angle = rng.uniform(0, np.pi)
            c = (kernel_size - 1) / 2
            d = np.array([np.cos(angle), np.sin(angle)]) * c
            cv2.line(kernel, (int(round(c - d[0])), int(round(c - d[1]))),
                     (int(round(c + d[0])), int(round(c + d[1]))), 1.0, 1)
            kernel /= kernel.sum()
            for t in range(start, min(start + length, num_frames)):
                blurred[t] = True
                blur_kernels[t] = kernel
    noise_seed = int(rng.integers(0, 2**31))
    noise_rng = np.random.default_rng(noise_seed)

    frames, annotations = [], []
    for t in range(num_frames):
        ox = int(round(margin + pan[0] * t))
        oy = int(round(margin + pan[1] * t))
        frame = canvas[oy:oy + height, ox:ox + width].copy()
        frame_objects, occluders = [], []
        for obj in objects:
            view = np.cos(obj["phase"] + obj["turn"] * t)
            # A turning body looks narrower from the side; the same for every class.
            scale = 1 + obj["scale_amplitude"] * np.sin(2 * np.pi * t / obj["scale_period"]
                                                        + obj["scale_phase"])
            w = int(round(obj["size"] * scale * obj["aspect"] * (0.6 + 0.4 * abs(view))))
            h = int(round(obj["size"] * scale / obj["aspect"]))
            w, h = max(8, min(w, width)), max(8, min(h, height))
            # Bounce off the frame's edges so that every box stays inside the image.
            if obj["x"] - w / 2 < 0 or obj["x"] + w / 2 > width:
                obj["vx"] = abs(obj["vx"]) if obj["x"] - w / 2 < 0 else -abs(obj["vx"])
            if obj["y"] - h / 2 < 0 or obj["y"] + h / 2 > height:
                obj["vy"] = abs(obj["vy"]) if obj["y"] - h / 2 < 0 else -abs(obj["vy"])
            xmin = int(np.clip(round(obj["x"] - w / 2), 0, width - w))
            ymin = int(np.clip(round(obj["y"] - h / 2), 0, height - h))
            box = (xmin, ymin, xmin + w, ymin + h)
            cue_alpha = float(np.clip((view - config.cue_threshold) / 0.15, 0, 1))
            _render_object(frame, obj, cue_alpha, box, names[obj["label"] - 1])
            occluded = False
            if obj["occlusion"] and obj["occlusion"][0] <= t < obj["occlusion"][1]:
                occluded = True
                occluders.append((box, obj["occlusion"]))
            frame_objects.append({
                "box": box, "label": obj["label"], "name": names[obj["label"] - 1],
                "track_id": obj["track_id"], "occluded": occluded,
                "cue_visible": cue_alpha > 0.5 and not occluded and not blurred[t],
                "blurred": bool(blurred[t])})
            obj["x"] += obj["vx"]
            obj["y"] += obj["vy"]
        for (xmin, ymin, xmax, ymax), (_, _, side, fraction, (sx, sy)) in occluders:
            # A patch of the background hides `fraction` of the box from one side.
            w, h = xmax - xmin, ymax - ymin
            x0, y0, x1, y1 = xmin - 3, ymin - 3, xmax + 3, ymax + 3
            if side == 0:
                x1 = xmin + int(round(fraction * w))
            elif side == 1:
                x0 = xmax - int(round(fraction * w))
            elif side == 2:
                y1 = ymin + int(round(fraction * h))
            else:
                y0 = ymax - int(round(fraction * h))
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(width, x1), min(height, y1)
            patch = canvas[sy:sy + (y1 - y0), sx:sx + (x1 - x0)]
            frame[y0:y0 + patch.shape[0], x0:x0 + patch.shape[1]] = patch
        if blurred[t]:
            frame = cv2.filter2D(frame, -1, blur_kernels[t], borderType=cv2.BORDER_REFLECT)
        frame = frame + noise_rng.normal(0, 3, frame.shape)
        frames.append(np.clip(np.round(frame), 0, 255).astype(np.uint8))
        annotations.append(frame_objects)
    return np.stack(frames), annotations


def media_id(split, index):
    return f"SYN_{split}_{index // 100:04d}/SYN_{split}_{index:08d}"


def _encode_jpeg(frame, quality):
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()


def make_video(config, split, index):
    """One synthetic video as a `schema.Video` with JPEG frames (what the records hold)."""
    frames, annotations = generate_video(config, split, index)
    name = media_id(split, index)
    records = []
    for t, (frame, objects) in enumerate(zip(frames, annotations)):
        boxes = np.array([(o["box"][1], o["box"][0], o["box"][3], o["box"][2]) for o in objects],
                         np.float64).reshape(-1, 4)
        records.append(schema.Frame(
            encoded=_encode_jpeg(frame, config.jpeg_quality), timestamp=t,
            source_id=f"{name}/{t:06d}", boxes_yxyx=boxes,
            labels=[o["label"] for o in objects], label_names=[o["name"] for o in objects],
            track_ids=[o["track_id"] for o in objects]))
    return schema.Video(media_id=name, height=config.height, width=config.width,
                        frames=records, dataset_name=DATASET_NAME)


def _config_dict(config):
    data = config.as_dict() if hasattr(config, "as_dict") else dict(config)
    # Unset optional parameters keep the stamps (fingerprints) of data sets generated
    # before they existed.
    return {key: value for key, value in data.items() if value is not None}


def _build(task, skip_errors, config_dict, split):
    config = config_lib.SyntheticConfig(config_dict)
    return convert_lib.VideoResult(make_video(config, split, task.extra["index"]), [])


def write_tfrecords(output_prefix, config=None, split="train", num_shards=None, workers=1,
                    quiet=True):
    """Writes a split's records directly (the same bytes the converter makes from
    `write_ilsvrc_layout`'s files with `--classes`). Returns the shard paths."""
    config = config or config_lib.SyntheticConfig()
    tasks = [convert_lib.VideoTask(media_id(split, i), [], {"index": i})
             for i in range(_num_videos(config, split))]
    build = functools.partial(_build, config_dict=_config_dict(config), split=split)
    stats = convert_lib.convert(tasks, build, output_prefix, num_shards=num_shards or config.num_shards,
                                workers=workers, description=f"synthetic {split}", quiet=quiet)
    return stats["shards"]


def _xml(name, stem, height, width, objects, synsets):
    lines = ["<annotation>", f"  <folder>{name}</folder>", f"  <filename>{stem}</filename>",
             "  <source><database>stmn_synthetic</database></source>",
             f"  <size><width>{width}</width><height>{height}</height></size>"]
    for o in objects:
        xmin, ymin, xmax, ymax = o["box"]
        lines += ["  <object>", f"    <trackid>{o['track_id']}</trackid>",
                  f"    <name>{synsets[o['label'] - 1]}</name>",
                  f"    <bndbox><xmax>{xmax}</xmax><xmin>{xmin}</xmin>"
                  f"<ymax>{ymax}</ymax><ymin>{ymin}</ymin></bndbox>",
                  f"    <occluded>{int(o['occluded'])}</occluded>",
                  "    <generated>0</generated>", "  </object>"]
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


def write_ilsvrc_layout(root, config=None, split="train", num_videos=None):
    """Writes a split in the ILSVRC2015 VID layout under `root`:
    Data/VID/<split>/<media id>/%06d.JPEG, Annotations/VID/<split>/<media id>/%06d.xml
    (with trackid, occluded, generated), ImageSets/VID/<split>.txt (one snippet a
    line) and `root/synthetic_classes.txt` (pass it to the converter's --classes).
    Returns the list of media ids."""
    config = config or config_lib.SyntheticConfig()
    synsets = [s for s, _ in class_list(config)]
    count = _num_videos(config, split) if num_videos is None else num_videos
    names = []
    for index in range(count):
        name = media_id(split, index)
        frames, annotations = generate_video(config, split, index)
        data_dir = os.path.join(root, "Data", "VID", split, name)
        annotation_dir = os.path.join(root, "Annotations", "VID", split, name)
        os.makedirs(data_dir, exist_ok=True)
        os.makedirs(annotation_dir, exist_ok=True)
        for t, (frame, objects) in enumerate(zip(frames, annotations)):
            stem = f"{t:06d}"
            with open(os.path.join(data_dir, stem + ".JPEG"), "wb") as f:
                f.write(_encode_jpeg(frame, config.jpeg_quality))
            with open(os.path.join(annotation_dir, stem + ".xml"), "w") as f:
                f.write(_xml(name, stem, config.height, config.width, objects, synsets))
        names.append(name)
    os.makedirs(os.path.join(root, "ImageSets", "VID"), exist_ok=True)
    with open(os.path.join(root, "ImageSets", "VID", f"{split}.txt"), "w") as f:
        f.writelines(f"{name} {i + 1}\n" for i, name in enumerate(names))
    from stmn_tf.data import vid_classes
    vid_classes.write_class_file(os.path.join(root, "synthetic_classes.txt"), class_list(config))
    return names


def _fingerprint(config):
    key = {"config": _config_dict(config), "generator_version": GENERATOR_VERSION}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def ensure_synthetic_dataset(directory, config=None, splits=tuple(SPLITS), workers=1,
                             quiet=True):
    """Generates the splits that are missing in `directory` (or were made with other
    parameters), and returns {split: file pattern "DIR/<split>-*-of-*"}.

    A split is complete when its shards and its stamp `DIR/<split>.json` (the
    parameters and class names) exist; the stamp is written last, so an interrupted
    generation is redone on the next call.
    """
    config = config or config_lib.SyntheticConfig()
    check_speeds(config)
    os.makedirs(directory, exist_ok=True)
    fingerprint = _fingerprint(config)
    patterns = {}
    for split in splits:
        prefix = os.path.join(directory, split)
        stamp_path = prefix + ".json"
        stamp = None
        if os.path.exists(stamp_path):
            with open(stamp_path) as f:
                stamp = json.load(f)
        shards = convert_lib.shard_paths(prefix, config.num_shards)
        if not (stamp and stamp.get("fingerprint") == fingerprint
                and all(os.path.exists(p) for p in shards)):
            write_tfrecords(prefix, config, split, workers=workers, quiet=quiet)
            stamp = {"fingerprint": fingerprint, "config": _config_dict(config),
                     "classes": list(class_names(config)), "num_videos": _num_videos(config, split)}
            temporary = stamp_path + ".tmp"
            with open(temporary, "w") as f:
                json.dump(stamp, f, indent=1, sort_keys=True)
            os.replace(temporary, stamp_path)
        patterns[split] = f"{prefix}-*-of-{config.num_shards:05d}"
    return patterns


SYNTHETIC_DIR_PLACEHOLDER = "{synthetic_data_dir}"


def resolve_synthetic_data(config, root=None):
    """Generates the synthetic data set when the experiment uses it and it is missing.

    Input paths may start with "{synthetic_data_dir}" (the synthetic configs' do), so
    that overriding `synthetic_data_dir` moves them too. Relative paths are taken
    relative to `root` (the current directory by default). The eval pipeline gets the
    train pipeline's `synthetic` parameters, since one data set is generated from
    them. Returns the config with absolute input paths; calling it again is a no-op.
    """
    root = root or os.getcwd()
    directory = config.synthetic_data_dir
    if directory and not os.path.isabs(directory):
        directory = os.path.join(root, directory)
    for data in (config.train_data, config.eval_data):
        for field in ("input_path", "det_input_path"):
            value = getattr(data, field)
            if SYNTHETIC_DIR_PLACEHOLDER in value:
                if not directory:
                    raise ValueError(f"{field} {value!r} uses {SYNTHETIC_DIR_PLACEHOLDER} "
                                      "but synthetic_data_dir is empty")
                value = value.replace(SYNTHETIC_DIR_PLACEHOLDER, directory)
            patterns = [p.strip() for p in value.split(",") if p.strip()]
            value = ",".join(p if os.path.isabs(p) or "://" in p else os.path.join(root, p)
                             for p in patterns)
            setattr(data, field, value)
    if not directory:
        return config
    config.synthetic_data_dir = directory
    config.eval_data.synthetic = copy.deepcopy(config.train_data.synthetic)
    ensure_synthetic_dataset(directory, config.train_data.synthetic, quiet=False)
    return config
