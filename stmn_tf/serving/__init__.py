"""SavedModel export and serving clients.

`export` writes the SavedModel (`export_saved_model`, `signature_ops`), `signatures`
holds the serving functions (clip, encoded frames, stream), `client` builds TF Serving
requests and parses their answers (NumPy only; gRPC needs tensorflow-serving-api).
Submodules are not imported here, so that `stmn_tf.serving.client` does not pull in
TensorFlow.
"""
