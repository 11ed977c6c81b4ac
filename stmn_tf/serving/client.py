"""Clients of an exported detector served by TF Serving: requests and answers.

Builds the REST body (`POST /v1/models/<name>:predict`) and the gRPC `PredictRequest`
for a video's frames, and turns answers into per-frame detections in the format of
`stmn_tf.evaluation.vid_eval.evaluate`: `{"boxes": [n, 4] xmin, ymin, xmax, ymax in
pixels of the original frame, "labels": [n] int 1..C, "scores": [n]}` (padding rows
dropped).

Imports only NumPy at module level: the REST helpers need nothing else; the gRPC ones
need `tensorflow-serving-api` (and TensorFlow, which it depends on), imported when
called; `encode_frames` needs OpenCV.

Example (REST, with `requests`):

    frames = ...  # uint8 [T, H, W, 3] RGB
    body = client.rest_request(frames)  # serving_default, "inputs"
    answer = requests.post("http://localhost:8501/v1/models/stmn:predict", json=body).json()
    detections = client.parse_rest_response(answer, frames.shape[1:3])  # one dict per frame
"""

import base64

import numpy as np

SIGNATURES = ("serving_default", "encoded_frames", "stream")
INPUT_KEYS = {"serving_default": "images", "encoded_frames": "encoded_frames"}
STREAM_INPUT_KEYS = ("frame", "state_memory", "state_features")
STATE_KEYS = ("state_memory", "state_features")
OUTPUT_KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


# -- frames -------------------------------------------------------------------


def _check_frames(frames):
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise TypeError(f"frames must be uint8 RGB, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise ValueError(f"frames must be [T, H, W, 3] with T >= 1, got shape {frames.shape}")
    return frames


def encode_frames(frames, image_format="png"):
    """uint8 RGB `[T, H, W, 3]` -> a list of T PNG (lossless) or JPEG byte strings."""
    import cv2

    frames = _check_frames(frames)
    extension = {"png": ".png", "jpeg": ".jpg", "jpg": ".jpg"}[image_format.lower()]
    encoded = []
    for frame in frames:
        ok, data = cv2.imencode(extension, np.ascontiguousarray(frame[..., ::-1]))  # OpenCV is BGR
        if not ok:
            raise ValueError(f"OpenCV could not encode a frame of shape {frame.shape}")
        encoded.append(data.tobytes())
    return encoded


def _b64(data):
    return {"b64": base64.b64encode(bytes(data)).decode("ascii")}


# -- REST -----------------------------------------------------------------------


def rest_request(frames, signature_name="serving_default", row_format=False):
    """The JSON body of a predict request for a clip.

    Args:
      frames: `serving_default`: uint8 `[T, H, W, 3]` RGB. `encoded_frames`: a list
        of T JPEG/PNG byte strings (sent base64 encoded, as TF Serving expects for
        string tensors).
      signature_name: `"serving_default"` or `"encoded_frames"`.
      row_format: send `"instances"` (one entry per frame; TF Serving stacks them on
        the T axis, and answers with `"predictions"`) instead of the columnar
        `"inputs"` (answered with `"outputs"`). Defaults to False.

    Returns:
      dict, ready for `json.dumps`.
    """
    if signature_name not in INPUT_KEYS:
        raise ValueError(
            f"signature_name must be one of {sorted(INPUT_KEYS)} (stream: use "
            f"rest_stream_request), got {signature_name!r}"
        )
    if signature_name == "encoded_frames":
        if isinstance(frames, (bytes, str)) or not len(frames):
            raise ValueError("encoded_frames needs a non-empty list of image byte strings")
        values = [_b64(data) for data in frames]
    else:
        values = _check_frames(frames).tolist()
    body = {"signature_name": signature_name}
    if row_format:
        body["instances"] = values
    else:
        body["inputs"] = {INPUT_KEYS[signature_name]: values}
    return body


def zero_state(state_shapes):
    """The state that starts a video: `{"state_memory": zeros, "state_features": zeros}`.

    `state_shapes`: `{"state_memory": [h, w, D], "state_features": [h, w, C]}`, as in
    the export's `assets.extra/stmn_serving.json` (`stream_state_shapes`) or the
    model's metadata (`GET /v1/models/<name>/metadata`).
    """
    return {key: np.zeros(state_shapes[key], np.float32) for key in STATE_KEYS}


def rest_stream_request(frame, state):
    """The JSON body of a `stream` request: one uint8 `[H, W, 3]` frame and the state.

    Always columnar (`"inputs"`): the inputs have different first dimensions.
    """
    frame = _check_frames(np.asarray(frame)[None])[0]
    inputs = {"frame": frame.tolist()}
    for key in STATE_KEYS:
        inputs[key] = np.asarray(state[key], np.float32).tolist()
    return {"signature_name": "stream", "inputs": inputs}


def _frame_sizes(frame_sizes, count):
    sizes = np.asarray(frame_sizes, np.float64)
    if sizes.shape == (2,):
        sizes = np.tile(sizes[None], [count, 1])
    if sizes.shape != (count, 2):
        raise ValueError(
            f"frame_sizes must be (height, width) or [{count}, 2], got shape {sizes.shape}"
        )
    return sizes


def detections_per_frame(outputs, frame_sizes):
    """The four detection outputs of T frames -> T detection dicts in pixels.

    Args:
      outputs: dict of arrays: `detection_boxes` `[T, N, 4]` normalised ymin, xmin,
        ymax, xmax; `detection_scores`, `detection_classes` `[T, N]`;
        `num_detections` `[T]`.
      frame_sizes: (height, width) of the original frames, one pair for all frames
        or `[T, 2]`.

    Returns:
      a list of T dicts: `boxes` float32 `[n, 4]` xmin, ymin, xmax, ymax pixels,
      `labels` int32 `[n]` 1..C, `scores` float32 `[n]`, n = num_detections.
    """
    boxes = np.asarray(outputs["detection_boxes"], np.float32)
    scores = np.asarray(outputs["detection_scores"], np.float32)
    classes = np.asarray(outputs["detection_classes"])
    counts = np.asarray(outputs["num_detections"]).astype(np.int64)
    sizes = _frame_sizes(frame_sizes, boxes.shape[0])
    result = []
    for t in range(boxes.shape[0]):
        n = int(counts[t])
        height, width = sizes[t]
        ymin, xmin, ymax, xmax = (boxes[t, :n, i] for i in range(4))
        pixels = np.stack([xmin * width, ymin * height, xmax * width, ymax * height], axis=-1)
        result.append(
            {
                "boxes": pixels.astype(np.float32).reshape(n, 4),
                "labels": np.rint(classes[t, :n]).astype(np.int32),
                "scores": scores[t, :n],
            }
        )
    return result


def _rest_outputs(response):
    if "error" in response:
        raise RuntimeError(f"the server answered with an error: {response['error']}")
    if "outputs" in response:
        return {key: np.asarray(response["outputs"][key]) for key in response["outputs"]}
    if "predictions" in response:
        rows = response["predictions"]
        return {key: np.asarray([row[key] for row in rows]) for key in OUTPUT_KEYS}
    raise ValueError(f"not a predict answer (no 'outputs' or 'predictions'): {sorted(response)}")


def parse_rest_response(response, frame_sizes):
    """A `serving_default` / `encoded_frames` JSON answer (a dict) -> per-frame detections."""
    return detections_per_frame(_rest_outputs(response), frame_sizes)


def parse_rest_stream_response(response, frame_size):
    """A `stream` JSON answer -> (the frame's detection dict, the new state dict)."""
    outputs = _rest_outputs(response)
    return _split_stream(outputs, frame_size)


def _split_stream(outputs, frame_size):
    frame = {key: np.asarray(outputs[key])[None] for key in OUTPUT_KEYS}
    state = {key: np.asarray(outputs[key], np.float32) for key in STATE_KEYS}
    return detections_per_frame(frame, frame_size)[0], state


# -- gRPC -----------------------------------------------------------------------


def _predict_pb2():
    try:
        from tensorflow_serving.apis import predict_pb2
    except ImportError as e:
        raise ImportError(
            "The gRPC helpers need tensorflow-serving-api: "
            "pip install 'tensorflow-serving-api==2.20.*'"
        ) from e
    return predict_pb2


def _new_request(model_name, signature_name, version):
    request = _predict_pb2().PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    return request


def grpc_predict_request(frames, model_name="stmn", signature_name="serving_default", version=None):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` for a clip.

    Args:
      frames: as in `rest_request` (uint8 `[T, H, W, 3]`, or T byte strings for
        `encoded_frames`; bytes travel as they are, no base64).
      model_name: str, the server's `--model_name`. Defaults to `"stmn"`.
      signature_name: `"serving_default"` or `"encoded_frames"`.
      version: optional int, a model version (default: the server's latest).
    """
    import tensorflow as tf

    if signature_name not in INPUT_KEYS:
        raise ValueError(f"signature_name must be one of {sorted(INPUT_KEYS)}, got {signature_name!r}")
    request = _new_request(model_name, signature_name, version)
    if signature_name == "encoded_frames":
        if isinstance(frames, (bytes, str)) or not len(frames):
            raise ValueError("encoded_frames needs a non-empty list of image byte strings")
        proto = tf.make_tensor_proto([bytes(f) for f in frames], dtype=tf.string, shape=[len(frames)])
    else:
        proto = tf.make_tensor_proto(_check_frames(frames), dtype=tf.uint8)
    request.inputs[INPUT_KEYS[signature_name]].CopyFrom(proto)
    return request


def grpc_stream_request(frame, state, model_name="stmn", version=None):
    """A `stream` `PredictRequest`: uint8 `[H, W, 3]` frame plus the state dict."""
    import tensorflow as tf

    request = _new_request(model_name, "stream", version)
    frame = _check_frames(np.asarray(frame)[None])[0]
    request.inputs["frame"].CopyFrom(tf.make_tensor_proto(frame, dtype=tf.uint8))
    for key in STATE_KEYS:
        request.inputs[key].CopyFrom(
            tf.make_tensor_proto(np.asarray(state[key], np.float32), dtype=tf.float32)
        )
    return request


def _grpc_outputs(response):
    import tensorflow as tf

    return {key: tf.make_ndarray(proto) for key, proto in response.outputs.items()}


def parse_grpc_response(response, frame_sizes):
    """A `PredictResponse` of `serving_default` / `encoded_frames` -> per-frame detections."""
    return detections_per_frame(_grpc_outputs(response), frame_sizes)


def parse_grpc_stream_response(response, frame_size):
    """A `stream` `PredictResponse` -> (the frame's detection dict, the new state dict)."""
    return _split_stream(_grpc_outputs(response), frame_size)
