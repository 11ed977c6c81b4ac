"""stmn_tf.serving.client against the exported signatures (the server's side emulated).

The REST bodies are decoded the way TF Serving decodes them (columnar "inputs" as
tensors, row "instances" stacked on the first axis, {"b64": ...} as bytes) and fed to
the loaded signatures; the answers are encoded as TF Serving encodes them.
"""

import base64
import json

import numpy as np
import pytest
import tensorflow as tf

from stmn_tf.serving import client

OUTPUT_KEYS = client.OUTPUT_KEYS


def _decode_value(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode_value(v) for v in value]
    return value


def serve_rest(loaded, body):
    """What TF Serving does with a predict body, on the loaded SavedModel."""
    body = json.loads(json.dumps(body))  # only what survives JSON
    signature = loaded.signatures[body.get("signature_name", "serving_default")]
    specs = signature.structured_input_signature[1]
    if "instances" in body:
        (key,) = specs  # one input: each instance is one row of it
        inputs = {key: _decode_value(body["instances"])}
    else:
        inputs = {key: _decode_value(value) for key, value in body["inputs"].items()}
    tensors = {key: tf.constant(value, specs[key].dtype) for key, value in inputs.items()}
    outputs = {key: value.numpy() for key, value in signature(**tensors).items()}
    if "instances" in body:
        count = len(body["instances"])
        return {"predictions": [{k: v[i].tolist() for k, v in outputs.items()} for i in range(count)]}
    return {"outputs": {key: value.tolist() for key, value in outputs.items()}}


def expected_per_frame(outputs, height, width):
    """Hand conversion of the signature's outputs to pixel xyxy boxes per frame."""
    frames = []
    for t in range(len(outputs["num_detections"])):
        n = int(outputs["num_detections"][t])
        ymin, xmin, ymax, xmax = outputs["detection_boxes"][t, :n].T
        frames.append(
            {
                "boxes": np.stack([xmin * width, ymin * height, xmax * width, ymax * height], -1),
                "labels": outputs["detection_classes"][t, :n].astype(int),
                "scores": outputs["detection_scores"][t, :n],
            }
        )
    return frames


def assert_frames_equal(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a["boxes"], e["boxes"], rtol=1e-5, atol=1e-3)
        np.testing.assert_array_equal(a["labels"], e["labels"])
        np.testing.assert_allclose(a["scores"], e["scores"], rtol=1e-5, atol=1e-6)
        assert a["labels"].dtype == np.int32 and a["boxes"].shape[1:] == (4,)


@pytest.fixture(scope="module")
def direct(loaded, exported):
    """The signature's own answer on the test clip."""
    outputs = loaded.signatures["serving_default"](images=tf.constant(exported.frames))
    return {key: value.numpy() for key, value in outputs.items()}


def test_rest_body_shapes():
    frames = np.zeros((2, 4, 5, 3), np.uint8)
    body = client.rest_request(frames)
    assert body["signature_name"] == "serving_default"
    assert np.asarray(body["inputs"]["images"]).shape == (2, 4, 5, 3)
    rows = client.rest_request(frames, row_format=True)
    assert np.asarray(rows["instances"]).shape == (2, 4, 5, 3)
    encoded = client.rest_request([b"\x89PNG", b"abc"], "encoded_frames")
    assert encoded["inputs"]["encoded_frames"] == [{"b64": "iVBORw=="}, {"b64": "YWJj"}]
    with pytest.raises(TypeError, match="uint8"):
        client.rest_request(frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        client.rest_request(frames[0])
    with pytest.raises(ValueError, match="stream"):
        client.rest_request(frames, "stream")
    with pytest.raises(ValueError, match="non-empty"):
        client.rest_request([], "encoded_frames")


@pytest.mark.parametrize("row_format", [False, True])
def test_rest_round_trip(loaded, exported, direct, row_format):
    frames = exported.frames
    answer = serve_rest(loaded, client.rest_request(frames, row_format=row_format))
    assert ("predictions" in answer) == row_format
    detections = client.parse_rest_response(answer, frames.shape[1:3])
    assert_frames_equal(detections, expected_per_frame(direct, *frames.shape[1:3]))


def test_rest_encoded_frames_round_trip(loaded, exported, direct):
    frames = exported.frames
    body = client.rest_request(client.encode_frames(frames, "png"), "encoded_frames")
    detections = client.parse_rest_response(serve_rest(loaded, body), frames.shape[1:3])
    assert_frames_equal(detections, expected_per_frame(direct, *frames.shape[1:3]))


def test_rest_stream_round_trip(loaded, exported):
    shapes = loaded.signatures["stream"].structured_input_signature[1]
    state = client.zero_state({k: shapes[k].shape.as_list() for k in client.STATE_KEYS})
    frames = exported.frames
    for frame in frames:
        body = client.rest_stream_request(frame, state)
        assert set(body["inputs"]) == set(client.STREAM_INPUT_KEYS)
        direct = loaded.signatures["stream"](
            frame=tf.constant(frame), **{k: tf.constant(v) for k, v in state.items()}
        )
        detections, state = client.parse_rest_stream_response(serve_rest(loaded, body), frame.shape[:2])
        expected = expected_per_frame(
            {k: direct[k].numpy()[None] for k in OUTPUT_KEYS}, *frame.shape[:2]
        )[0]
        assert_frames_equal([detections], [expected])
        np.testing.assert_allclose(state["state_memory"], direct["state_memory"].numpy(), atol=1e-6)


def test_parse_rejects_errors_and_other_answers():
    with pytest.raises(RuntimeError, match="error: Expects arg"):
        client.parse_rest_response({"error": "Expects arg[0] to be uint8"}, (4, 4))
    with pytest.raises(ValueError, match="no 'outputs' or 'predictions'"):
        client.parse_rest_response({"foo": 1}, (4, 4))


def test_detections_per_frame_by_hand():
    outputs = {
        "detection_boxes": np.array([[[0.1, 0.2, 0.5, 0.6], [0, 0, 0, 0]]], np.float32),
        "detection_scores": np.array([[0.9, 0.0]], np.float32),
        "detection_classes": np.array([[3.0, 0.0]], np.float32),
        "num_detections": np.array([1.0], np.float32),
    }
    (frame,) = client.detections_per_frame(outputs, (100, 200))
    np.testing.assert_allclose(frame["boxes"], [[40.0, 10.0, 120.0, 50.0]], rtol=1e-6)
    np.testing.assert_array_equal(frame["labels"], [3])
    np.testing.assert_allclose(frame["scores"], [0.9])


def test_grpc_request_matches_the_signatures(loaded, exported, direct):
    pytest.importorskip("tensorflow_serving.apis.predict_pb2", reason="tensorflow-serving-api not installed")
    from tensorflow_serving.apis import predict_pb2

    frames = exported.frames
    requests = {
        "serving_default": client.grpc_predict_request(frames, model_name="stmn", version=1),
        "encoded_frames": client.grpc_predict_request(
            client.encode_frames(frames), signature_name="encoded_frames"
        ),
        "stream": client.grpc_stream_request(
            frames[0],
            client.zero_state(
                {k: v.shape.as_list() for k, v in loaded.signatures["stream"].structured_input_signature[1].items()
                 if k in client.STATE_KEYS}
            ),
        ),
    }
    for name, request in requests.items():
        assert isinstance(request, predict_pb2.PredictRequest)
        assert request.model_spec.name == "stmn" and request.model_spec.signature_name == name
        specs = loaded.signatures[name].structured_input_signature[1]
        assert set(request.inputs) == set(specs), name
        for key, proto in request.inputs.items():
            assert proto.dtype == specs[key].dtype.as_datatype_enum, (name, key)
            shape = tf.TensorShape([d.size for d in proto.tensor_shape.dim])
            assert specs[key].shape.is_compatible_with(shape), (name, key, shape)
    assert requests["serving_default"].model_spec.version.value == 1

    # The server's side: tensors from the protos into the signature, answer back.
    request = requests["serving_default"]
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    outputs = loaded.signatures["serving_default"](**inputs)
    response = predict_pb2.PredictResponse()
    for key, value in outputs.items():
        response.outputs[key].CopyFrom(tf.make_tensor_proto(value.numpy()))
    detections = client.parse_grpc_response(response, frames.shape[1:3])
    assert_frames_equal(detections, expected_per_frame(direct, *frames.shape[1:3]))
    encoded = requests["encoded_frames"].inputs["encoded_frames"]
    assert list(encoded.string_val) == client.encode_frames(frames)
