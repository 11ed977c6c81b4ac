import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.data import config as config_lib
from stmn_tf.data import pipeline
from stmn_tf.data import synthetic
from tests.data import helpers


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synthetic")
    config = helpers.tiny_config()
    synthetic.ensure_synthetic_dataset(str(directory), config, splits=("train", "val"))
    return str(directory), config


def _config(directory, split="train", **overrides):
    config = config_lib.DataConfig(
        input_path=f"{directory}/{split}-*", is_training=split == "train", num_frames=3,
        frame_stride=2, image_size={"short_side": 96, "long_side_max": 200, "padded_size": [112, 128]},
        max_boxes=4, global_batch_size=2, deterministic=True, num_classes=4, shuffle_buffer_size=4,
        cycle_length=2)
    config.override(overrides)
    return config


def test_clip_indices_respect_stride_and_bounds():
    for draw in np.linspace(0, 0.999, 7):
        indices, valid = pipeline.clip_indices(tf.constant(100), 7, 10, tf.constant(draw, tf.float32))
        indices = indices.numpy()
        assert np.all(np.diff(indices) == 10) and indices[0] >= 0 and indices[-1] <= 99
        assert valid.numpy().all()
    starts = {int(pipeline.clip_indices(tf.constant(100), 7, 10, tf.constant(d))[0][0])
              for d in np.arange(0, 1, 1 / 40, dtype=np.float32)}
    assert starts == set(range(0, 40))  # the whole video is covered
    indices, _ = pipeline.clip_indices(tf.constant(20), 7, 10, tf.constant(0.99))
    assert np.all(np.diff(indices.numpy()) == 3) and indices.numpy()[-1] <= 19  # stride lowered
    indices, valid = pipeline.clip_indices(tf.constant(4), 7, 10, tf.constant(0.5))
    assert indices.numpy().tolist() == [0, 1, 2, 3, 3, 3, 3]
    assert valid.numpy().tolist() == [True] * 4 + [False] * 3


def test_evaluation_frames_give_back_the_annotations_pixel_exact(dataset_dir):
    directory, config = dataset_dir
    frames = list(pipeline.build_dataset(_config(directory, "val", global_batch_size=0)))
    expected = []
    for index in range(config.num_val_videos):
        video, annotations = synthetic.generate_video(config, "val", index)
        expected += [(synthetic.media_id("val", index), t, video[t], objects)
                     for t, objects in enumerate(annotations)]
    assert len(frames) == len(expected)
    for frame, (media_id, t, image, objects) in zip(frames, expected):
        assert frame["video_id"].numpy().decode() == media_id and frame["frame_index"] == t
        assert frame["original_size"].numpy().tolist() == [64, 80]
        # Shorter side 64 -> 96: 96 x 120 inside the 112 x 128 padded tensor.
        assert frame["image_size"].numpy().tolist() == [96, 120]
        assert frame["images"].shape == (112, 128, 3)
        assert np.all(frame["images"].numpy()[96:] == 0)
        n = int(frame["num_boxes"])
        assert n == min(len(objects), 4)
        pixels = frame["boxes"].numpy()[:n] * [64, 80, 64, 80]
        wanted = np.array([(o["box"][1], o["box"][0], o["box"][3], o["box"][2]) for o in objects])
        np.testing.assert_array_equal(np.round(pixels), wanted.reshape(-1, 4)[:n])
        np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
        assert frame["labels"].numpy()[:n].tolist() == [o["label"] for o in objects][:n]
        assert frame["track_ids"].numpy()[:n].tolist() == [o["track_id"] for o in objects][:n]
        assert np.all(frame["labels"].numpy()[n:] == 0) and np.all(frame["track_ids"].numpy()[n:] == -1)
        resized = tf.image.resize(image.astype(np.float32), [96, 120]).numpy()
        # JPEG noise only (the saturated class inks lose most to chroma subsampling);
        # a wrong frame or a shifted crop is off by tens.
        assert np.abs(frame["images"].numpy()[:96, :120] - resized).mean() < 8


def _first_batches(config, count):
    return [{k: v.numpy() for k, v in b.items()} for b in pipeline.build_dataset(config).take(count)]


def test_training_clips_sampled_deterministically_and_flip_mirrors(dataset_dir):
    directory, _ = dataset_dir
    flipped_runs = [_first_batches(_config(directory), 4) for _ in range(2)]
    plain = _first_batches(_config(directory, random_flip=False), 4)
    for a, b in zip(*flipped_runs):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other_seed = _first_batches(_config(directory, seed=3), 4)
    assert any(not np.array_equal(a["frame_index"], b["frame_index"]) or
               not np.array_equal(a["flipped"], b["flipped"])
               for a, b in zip(flipped_runs[0], other_seed))
    saw_flip = saw_plain = False
    for batch, reference in zip(flipped_runs[0], plain):
        assert batch["images"].shape == (2, 3, 112, 128, 3)
        assert batch["boxes"].shape == (2, 3, 4, 4)
        np.testing.assert_array_equal(batch["frame_index"], reference["frame_index"])
        assert np.all(np.diff(batch["frame_index"], axis=1) == 2)
        assert np.all(batch["frame_index"] <= 8) and np.all(batch["frame_valid"])
        for i in range(2):
            h, w = batch["image_size"][i, 0]
            if batch["flipped"][i]:
                saw_flip = True
                np.testing.assert_allclose(batch["images"][i, :, :h, :w],
                                           reference["images"][i, :, :h, ::-1][:, :, -w:], atol=1e-3)
                ymin, xmin, ymax, xmax = np.moveaxis(reference["boxes"][i], -1, 0)
                mirrored = np.stack([ymin, 1 - xmax, ymax, 1 - xmin], -1)
                valid = np.arange(4)[None] < reference["num_boxes"][i][:, None]
                np.testing.assert_allclose(batch["boxes"][i][valid], mirrored[valid], atol=1e-6)
                assert np.all(batch["boxes"][i][~valid] == 0)
            else:
                saw_plain = True
                np.testing.assert_array_equal(batch["images"][i], reference["images"][i])
    assert saw_flip and saw_plain


def test_burn_in_frames_come_before_and_after_the_clip_at_its_stride(dataset_dir):
    directory, _ = dataset_dir
    frames = {}  # (video, frame index) -> the evaluation pipeline's image of that frame
    for frame in pipeline.build_dataset(_config(directory, is_training=False, global_batch_size=0)):
        frames[frame["video_id"].numpy(), int(frame["frame_index"])] = frame["images"].numpy()
    plain = _first_batches(_config(directory, random_flip=False), 3)
    burned = _first_batches(_config(directory, random_flip=False, burn_in_frames=2), 3)
    assert set(burned[0]) == set(plain[0]) | {"context_images"}
    for batch in burned:
        assert batch["images"].shape == (2, 3, 112, 128, 3)
        assert batch["context_images"].shape == (2, 4, 112, 128, 3)
        assert batch["boxes"].shape == (2, 3, 4, 4) and batch["frame_valid"].shape == (2, 3)
        for i in range(2):
            index = batch["frame_index"][i]
            stride = index[1] - index[0]
            assert stride >= 1 and np.all(np.diff(index) == stride)
            video = batch["video_id"][i]
            positions = [index[0] - 2 * stride, index[0] - stride, index[-1] + stride,
                         index[-1] + 2 * stride]
            for t in range(3):
                np.testing.assert_array_equal(batch["images"][i, t], frames[video, index[t]])
            for k, position in enumerate(positions):
                np.testing.assert_array_equal(batch["context_images"][i, k], frames[video, position])
    # Without burn-in nothing changes.
    for a, b in zip(plain, _first_batches(_config(directory, random_flip=False, burn_in_frames=0), 3)):
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    with pytest.raises(ValueError, match="burn_in_frames must be >= 0, got -1"):
        pipeline.build_dataset(_config(directory, burn_in_frames=-1))


def test_det_records_come_as_one_frame_clips_in_the_configured_mix(dataset_dir, tmp_path):
    directory, config = dataset_dir
    det_config = helpers.tiny_config(min_frames=1, max_frames=1, num_train_videos=3)
    synthetic.write_tfrecords(str(tmp_path / "det"), det_config, "train", num_shards=1)
    data_config = _config(directory, det_input_path=str(tmp_path / "det-*"), det_vid_ratio=0.5)
    shapes = [b["images"].shape[1] for b in pipeline.build_dataset(data_config).take(6)]
    assert shapes == [3, 3, 1, 3, 3, 1]
    assert pipeline._mix_pattern(1.0) == [0, 1] and pipeline._mix_pattern(2) == [0, 1, 1]


def test_input_context_shards_and_uses_the_per_replica_batch(dataset_dir):
    directory, _ = dataset_dir
    config = _config(directory, "val", global_batch_size=4)
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline_id,
                                             num_replicas_in_sync=2)
        batches = list(pipeline.make_dataset_fn(config)(context))
        assert batches[0]["images"].shape[0] == 2
        seen.append({v.decode() for b in batches for v in b["video_id"].numpy()})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    assert seen[0] | seen[1] == {synthetic.media_id("val", i) for i in range(2)}


def test_class_balance_evens_out_main_classes():
    labels = [1] * 30 + [2] * 3 + [3] * 3
    videos = tf.data.Dataset.from_tensor_slices(
        {"labels": tf.ragged.constant([[[label]] for label in labels]), "id": tf.range(36)})
    kept = [int(v["labels"].flat_values[0]) for v in pipeline.balance_classes(videos.repeat(20), 3, 0)]
    counts = np.bincount(kept, minlength=4)[1:]
    assert counts[0] < 2 * counts[1] and counts[1] > 0 and counts[2] > 0


def test_corrupt_record_names_the_file_or_is_skipped_and_counted(dataset_dir, tmp_path):
    directory, _ = dataset_dir
    source = tf.io.gfile.glob(f"{directory}/val-*")[0]
    broken = str(tmp_path / "val-broken")
    data = bytearray(open(source, "rb").read())
    data[40] ^= 0xFF  # inside the first record's payload: its checksum fails
    open(broken, "wb").write(bytes(data))
    config = _config(directory, "val", input_path=broken, global_batch_size=0)
    # The native reader (the default), its error explained by a checked pass.
    with pytest.raises(pipeline.CorruptDataError, match="val-broken: corrupt record 0"):
        list(pipeline.iterate(pipeline.build_dataset(config), config))
    # The Python reader names it itself (its error reaches the caller as an OpError).
    config.checked_reader = True
    with pytest.raises(tf.errors.OpError, match="val-broken: corrupt record 0"):
        list(pipeline.build_dataset(config))
    pipeline.READ_ERRORS.clear()
    config = _config(directory, "val", input_path=f"{broken},{directory}/val-*", global_batch_size=0,
                     skip_corrupt=True)
    frames = list(pipeline.build_dataset(config))
    assert pipeline.READ_ERRORS == {broken: 1}
    assert {f["video_id"].numpy() for f in frames} == {synthetic.media_id("val", i).encode()
                                                        for i in range(2)}


def test_corrupt_image_in_a_valid_record_names_file_video_and_frame_or_is_skipped(
        dataset_dir, tmp_path):
    from stmn_tf.data import schema

    directory, _ = dataset_dir
    source = tf.io.gfile.glob(f"{directory}/val-*")[0]
    videos = [schema.video_from_serialized(r)
              for r in tf.data.TFRecordDataset(source).as_numpy_iterator()]
    good = videos[0]
    frames = list(good.frames)
    frames[2] = dataclasses.replace(frames[2], encoded=frames[2].encoded[:len(frames[2].encoded) // 2])
    bad = dataclasses.replace(good, media_id="broken/video", frames=frames)
    path = str(tmp_path / "val-badimage")
    schema.write_tfrecord(path, [good, bad])  # valid records, checksums and all
    config = _config(directory, "val", input_path=path, global_batch_size=0)
    with pytest.raises(pipeline.CorruptDataError,
                       match=r"val-badimage: record 1, video 'broken/video', frame 2 "
                             r"\(image/timestamp \d+\): the image does not decode"):
        list(pipeline.iterate(pipeline.build_dataset(config), config))
    pipeline.READ_ERRORS.clear()
    config.skip_corrupt = True
    kept = {f["video_id"].numpy() for f in pipeline.build_dataset(config)}
    assert kept == {good.media_id.encode()}
    assert pipeline.READ_ERRORS == {path: 1}
    assert pipeline.image_looks_complete(good.frames[0].encoded)
    assert not pipeline.image_looks_complete(frames[2].encoded)
    assert not pipeline.image_looks_complete(b"not an image")
