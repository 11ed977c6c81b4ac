"""What R-FCN and STMN share: backbone, features, RPN, R-FCN head, losses, decoding.

A clip `[B, T, H, W, 3]` is processed as B*T frames everywhere except in the part
between the features `F_t` and the R-FCN head (`head_features`), which the static
R-FCN computes per frame and STMN computes with its memory over time.

Inputs are dicts:
  `images`: `[B, T, H, W, 3]` float RGB in [0, 255] (the backbone does the caffe
    mean subtraction that the keras.applications ResNet weights expect).
  `boxes`: `[B, T, G, 4]` normalised ymin, xmin, ymax, xmax (training only).
  `labels`: `[B, T, G]` int, 1..C, 0 = padding (training only).
  `proposals`: optional `[B, T, P, 4]` normalised yxyx external proposals
    (the paper's precomputed ones); all-zero rows are padding. When given, the head
    uses them instead of the RPN's (the RPN is still trained when boxes are given).
"""

import keras
import tensorflow as tf

from stmn_tf.models import losses as losses_lib
from stmn_tf.ops import box_ops

LOSS_NAMES = ("rpn_class_loss", "rpn_box_loss", "class_loss", "box_loss", "total_loss")
FEATURE_STRIDE = 16


class TwoStageDetector(keras.Model):
    """Base class of `RFCN` and `STMN`: a detector composed of parts.

    Each part is built by one `build_*` of `stmn_tf.models.builders` from its own
    sub-config. The parts with weights are Keras layers (`backbone`, `features`,
    `rpn_head`, `rfcn_head`, and the subclass's `head_features` layer); the others
    hold settings only (`proposal_generator`, `anchor_labeler`, `roi_sampler`,
    `decoder`). Subclasses set their `head_features` layer and then call
    `build_by_running`.

    Args:
      backbone: the ResNet (`stmn_tf.models.backbone.resnet_backbone`): `[N, H, W, 3]`
        RGB in [0, 255] -> (conv4, conv5), stride 16.
      features: `DetectorFeatures`: conv5 -> `F_t` `[N, h, w, C]`.
      rpn_head: `RPNHead` on `F_t`.
      proposal_generator: `ProposalGenerator` (anchors, proposal budgets, NMS).
      anchor_labeler: `AnchorLabeler` (the RPN's training targets).
      roi_sampler: `RoISampler` (the head's training RoIs, OHEM).
      rfcn_head: `RFCNHead` (C + 1 class maps, 4 box maps, PS-RoI pooling).
      decoder: `DetectionDecoder` (scores, boxes, per-class NMS).
      **kwargs: `keras.Model` arguments (`name`, ...).
    """

    PART_NAMES = ("backbone", "features", "rpn_head", "proposal_generator",
                  "anchor_labeler", "roi_sampler", "rfcn_head", "decoder")
    # The subclass's `head_features` part: (constructor argument, attribute).
    HEAD_PART = None

    def __init__(self, backbone, features, rpn_head, proposal_generator, anchor_labeler,
                 roi_sampler, rfcn_head, decoder, **kwargs):
        if rpn_head.num_anchors != proposal_generator.num_anchors:
            raise ValueError(
                f"rpn_head predicts {rpn_head.num_anchors} anchors per position but the "
                f"proposal_generator has {proposal_generator.num_anchors} "
                f"({len(proposal_generator.anchor_scales)} scales x "
                f"{len(proposal_generator.anchor_ratios)} ratios)"
            )
        if rfcn_head.feature_stride != proposal_generator.stride:
            raise ValueError(
                f"rfcn_head feature_stride {rfcn_head.feature_stride} differs from the proposal_generator's "
                f"{proposal_generator.stride}"
            )
        super().__init__(**kwargs)
        parts = (backbone, features, rpn_head, proposal_generator, anchor_labeler, roi_sampler,
                 rfcn_head, decoder)
        for name, part in zip(self.PART_NAMES, parts):
            setattr(self, name, part)
        self._loss_trackers = {name: keras.metrics.Mean(name=name) for name in LOSS_NAMES}
        # The training step's options (`compile` sets them).
        self.weight_decay = 0.0
        self.clip_norm = 0.0

    @property
    def num_classes(self):
        """Foreground classes C."""
        return self.rfcn_head.num_classes

    @property
    def feature_channels(self):
        """Channels of the features `F_t`."""
        return self.features.channels

    # -- subclass hooks -------------------------------------------------------

    def head_features(self, features, training=False):
        """`[B, T, h, w, feature_channels]` -> `[B, T, h, w, C_head]`, the R-FCN head's input."""
        raise NotImplementedError("abstract: RFCN and STMN define it")

    def clip_head_features(self, features, inputs, training=False):
        """The head's input for a training batch: `head_features` of the clip's
        `features` `[B, T, h, w, C]`; `inputs` (the `compute_losses` dict) lets a
        memory read context frames (`STMN`). Returns `[B, T, h, w, C_head]`."""
        return self.head_features(features, training=training)

    # -- building -------------------------------------------------------------

    def build_by_running(self):
        """Runs a 1-frame 32x32 clip once so that every layer has its weights before
        fit(), load_weights() or a tf.function trace (subclasses call it last in
        their `__init__`)."""
        features = self.extract_features(tf.zeros([1, 1, 32, 32, 3]))
        self.rpn_head(features[:, 0])
        head_input = self.head_features(features)
        self.rfcn_head(head_input[:, 0], tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), tf.constant([32, 32]))
        self.built = True

    def build(self, input_shape=None):
        self.built = True

    # -- forward pieces -------------------------------------------------------

    def extract_features(self, images):
        """`[B, T, H, W, 3]` RGB [0, 255] -> the features `F_t` `[B, T, h, w, C]` (stride 16)."""
        images = tf.convert_to_tensor(images)
        shape = tf.shape(images)
        frames = tf.reshape(images, tf.concat([[-1], shape[2:]], axis=0))
        _, conv5 = self.backbone(frames)
        features = self.features(conv5)
        return self._unflatten(features, shape[0], shape[1])

    @staticmethod
    def _flatten(x):
        shape = tf.shape(x)
        return tf.reshape(x, tf.concat([[-1], shape[2:]], axis=0))

    @staticmethod
    def _unflatten(x, batch, time):
        shape = tf.shape(x)
        return tf.reshape(x, tf.concat([[batch, time], shape[1:]], axis=0))

    def propose(self, features, image_size, proposals=None, training=False):
        """The first stage: the RPN on `F_t`, per frame.

        Args:
          features: `[B, T, h, w, C]`, the features `F_t`.
          image_size: `[2]` int, the input images' height and width in pixels.
          proposals: optional `[B, T, P, 4]` normalised yxyx external proposals
            (all-zero rows are padding); they replace the RPN's.
          training: bool. Chooses the RPN's training or test proposal budget.

        Returns:
          dict over the N = B * T frames: `rpn_logits` `[N, A]`, `rpn_deltas`
          `[N, A, 4]`, `anchors` `[A, 4]` normalised yxyx, `rois` `[N, R, 4]`
          normalised yxyx and `rois_valid` `[N, R]` bool.
        """
        features_flat = self._flatten(features)
        logits, deltas = self.rpn_head(features_flat)
        shape = tf.shape(features_flat)
        anchors = self.proposal_generator.anchors(shape[1], shape[2], image_size)
        if proposals is not None:
            rois = self._flatten(tf.cast(proposals, tf.float32))
            valid = box_ops.box_area(rois) > 0.0
        else:
            rois, valid = self.proposal_generator(logits, deltas, anchors, training=training)
        return {"rpn_logits": logits, "rpn_deltas": deltas, "anchors": anchors,
                "rois": rois, "rois_valid": valid}

    # -- training -------------------------------------------------------------

    def compute_losses(self, inputs, training=True):
        """The training losses of one batch of clips.

        Pure TensorFlow with no Python side effects, so a custom loop can call it per
        replica under `tf.distribute` (each replica's losses are means over its frames).

        Args:
          inputs: dict with `images`, `boxes`, `labels` and optionally `proposals`
            (see the module docstring) and `sampling_seed` (int `[2]`: the anchors
            and RoIs are then sampled statelessly from it, the same in any process;
            train.py derives it from the step).
          training: bool.

        Returns:
          dict of float32 scalars: `rpn_class_loss`, `rpn_box_loss`, `class_loss`,
          `box_loss` and their sum `total_loss`.
        """
        images = tf.convert_to_tensor(inputs["images"])
        image_size = tf.shape(images)[2:4]
        gt_boxes = self._flatten(tf.cast(inputs["boxes"], tf.float32))  # [N, G, 4]
        gt_labels = self._flatten(tf.cast(inputs["labels"], tf.int32))  # [N, G]
        features = self.extract_features(images)  # [B, T, h, w, C]
        first = self.propose(features, image_size, inputs.get("proposals"), training=True)
        rpn_seed = roi_seed = None
        if inputs.get("sampling_seed") is not None:
            # A stateless seed per step and replica (the training loop's), so that a
            # resumed run samples the anchors and RoIs the uninterrupted one did.
            seed = tf.cast(inputs["sampling_seed"], tf.int64)
            rpn_seed = tf.random.experimental.stateless_fold_in(seed, 1)
            roi_seed = tf.random.experimental.stateless_fold_in(seed, 2)
        rpn = self.anchor_labeler(first["anchors"], gt_boxes, gt_labels, seed=rpn_seed)
        rpn_class_loss, rpn_box_loss = losses_lib.rpn_losses(
            first["rpn_logits"], first["rpn_deltas"], rpn["labels"], rpn["box_targets"]
        )
        rois = self.roi_sampler(first["rois"], first["rois_valid"], gt_boxes, gt_labels,
                                seed=roi_seed)
        head_input = self._flatten(self.clip_head_features(features, inputs, training=training))
        class_logits, box_deltas = self.rfcn_head(head_input, rois["rois"], image_size)
        class_loss, box_loss = losses_lib.rfcn_losses(
            class_logits, box_deltas, rois["labels"], rois["valid"], rois["foreground"],
            rois["box_targets"], ohem_rois=self.roi_sampler.ohem_rois,
        )
        result = {
            "rpn_class_loss": rpn_class_loss,
            "rpn_box_loss": rpn_box_loss,
            "class_loss": class_loss,
            "box_loss": box_loss,
        }
        result["total_loss"] = tf.add_n(list(result.values()))
        return result

    def compile(self, optimizer="sgd", weight_decay=0.0, clip_norm=0.0, jit_compile=False,
                **kwargs):
        """`keras.Model.compile` with the training step's options; XLA off by default
        (NMS does not compile with XLA).

        Args:
          optimizer: a Keras optimizer (or its name).
          weight_decay: float. L2 on the kernels. Defaults to 0.
          clip_norm: float. Global gradient-norm clipping, 0 = off. Defaults to 0.
          jit_compile: bool. Defaults to False.
          **kwargs: the other `keras.Model.compile` arguments.
        """
        self.weight_decay = float(weight_decay)
        self.clip_norm = float(clip_norm)
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    @property
    def metrics(self):
        return list(self._loss_trackers.values())

    def _report(self, losses):
        for name, value in losses.items():
            self._loss_trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self._loss_trackers.items()}

    def train_step(self, data):
        """`fit`'s step: the one of train.py (`stmn_tf.training.step`)."""
        from stmn_tf.training.step import replica_train_step  # training imports models

        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        losses = replica_train_step(
            self, self.optimizer, inputs, self.weight_decay, self.clip_norm
        )
        return self._report({name: losses[name] for name in LOSS_NAMES})

    def test_step(self, data):
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._report(self.compute_losses(inputs, training=False))

    # -- inference ------------------------------------------------------------

    def detect_from_features(self, features, image_size, proposals=None, training=False):
        """Runs the RPN (unless `proposals`), the head and the decoding on `F_t`.

        Args:
          features: `[B, T, h, w, C]` from `extract_features`.
          image_size: `[2]` int, image height and width in pixels.
          proposals: optional `[B, T, P, 4]` normalised yxyx, zero rows = padding.

        Returns:
          the `predict_step` dict.
        """
        head_input = self.head_features(features, training=training)
        return self.detect_from_head_input(
            features, head_input, image_size, proposals, training=training
        )

    def detect_from_head_input(self, features, head_input, image_size, proposals=None,
                               training=False):
        """The RPN on `features`, the R-FCN head on `head_input`, then `decode`.

        Args:
          features: `[B, T, h, w, C]` `F_t` (the RPN reads them).
          head_input: `[B, T, h, w, C_head]`, what `head_features` (or `step`'s
            memory) made of them.
          image_size: `[2]` int, the input images' height and width in pixels.
          proposals: optional `[B, T, P, 4]` normalised yxyx, zero rows = padding.

        Returns:
          the `predict_step` dict.
        """
        shape = tf.shape(features)
        first = self.propose(features, image_size, proposals, training=training)
        class_logits, box_deltas = self.rfcn_head(
            self._flatten(head_input), first["rois"], image_size
        )
        return self.decode(
            class_logits, box_deltas, first["rois"], first["rois_valid"], shape[0], shape[1]
        )

    def decode(self, class_logits, box_deltas, rois, valid, batch, time):
        """The head's outputs over N = B * T frames -> the `predict_step` dict
        (`decoder`: softmax scores, boxes decoded from the RoIs, per-class NMS).

        Args:
          class_logits: `[N, R, C + 1]`, background first.
          box_deltas: `[N, R, 4]` encoded against the RoIs (`box_ops.HEAD_BOX_WEIGHTS`).
          rois: `[N, R, 4]` normalised yxyx.
          valid: `[N, R]` bool, the RoIs that are not padding.
          batch, time: B and T (N = B * T).

        Returns:
          the `predict_step` dict.
        """
        detections = self.decoder(class_logits, box_deltas, rois, valid)
        return {
            key: (tf.reshape(value, [batch, time]) if key == "num_detections"
                  else self._unflatten(value, batch, time))
            for key, value in detections.items()
        }

    # -- online: one frame at a time -------------------------------------------

    has_memory = False  # the one model-kind check: STMN sets it

    def state_shapes(self, image_height, image_width):
        """`{state key: [h, w, channels]}` of one video's state at this input size.

        Empty for a detector without memory. h, w = the feature map's size (stride 16,
        `same` padding: ceil(size / 16)).
        """
        return {}

    def initial_state(self, batch_size, image_height, image_width):
        """The state before a video's first frame: zeros, `{key: [B, h, w, channels]}`."""
        return {
            key: tf.zeros([batch_size] + shape, tf.float32)
            for key, shape in self.state_shapes(image_height, image_width).items()
        }

    def head_features_step(self, features, state):
        """One frame's head input: `([B, h, w, C_head], next state)` (see `step`)."""
        return self.head_features(features[:, None])[:, 0], state

    def step(self, inputs, state, training=False):
        """Detects one frame of a video, online, and returns the state for the next.

        The one place where a video runs causally, frame by frame: the online runner
        (`stmn_tf.inference.video.OnlineVideoDetector`) and the `stream` serving
        signature both call it. For STMN see `STMN.head_features_step`.

        Args:
          inputs: the frames `[B, H, W, 3]` RGB in [0, 255] (or a dict with
            `images`), or a dict with their `features` `[B, h, w, C]` (from
            `extract_features`) and `image_size` `[2]` (H, W).
          state: `initial_state(B, H, W)` before the first frame, then what the
            previous call returned.
          training: bool.

        Returns:
          `(detections, state)`: the `predict_step` dict without its T axis
          (`detection_boxes` `[B, N, 4]` normalised yxyx, `detection_scores` `[B, N]`,
          `detection_classes` `[B, N]`, `num_detections` `[B]`) and the next state.
        """
        if isinstance(inputs, dict) and "features" in inputs:
            features = tf.convert_to_tensor(inputs["features"])  # [B, h, w, C]
            image_size = tf.convert_to_tensor(inputs["image_size"])
        else:
            images = tf.convert_to_tensor(inputs["images"] if isinstance(inputs, dict) else inputs)
            image_size = tf.shape(images)[1:3]
            features = self.extract_features(images[:, None])[:, 0]  # [B, h, w, C]
        head_input, state = self.head_features_step(features, state)
        detections = self.detect_from_head_input(
            features[:, None], head_input[:, None], image_size, training=training
        )
        return {key: value[:, 0] for key, value in detections.items()}, state

    def detect(self, inputs, training=False):
        """`inputs` dict (or `images` tensor) -> the `predict_step` dict."""
        if not isinstance(inputs, dict):
            inputs = {"images": inputs}
        images = tf.convert_to_tensor(inputs["images"])
        features = self.extract_features(images)
        return self.detect_from_features(
            features, tf.shape(images)[2:4], inputs.get("proposals"), training=training
        )

    def call(self, inputs, training=False):
        """Detections, see `predict_step`."""
        return self.detect(inputs, training=training)

    def predict_step(self, data):
        """Detections after per-class NMS.

        Returns:
          dict: `detection_boxes` `[B, T, N, 4]` normalised ymin, xmin, ymax, xmax;
          `detection_scores` `[B, T, N]`; `detection_classes` `[B, T, N]` int32, 1..C;
          `num_detections` `[B, T]` int32 (entries past it are padding), N = max_detections.
        """
        inputs, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.detect(inputs, training=False)

    # -- serialisation --------------------------------------------------------

    def get_config(self):
        config = super().get_config()
        for name in self.PART_NAMES:
            config[name] = keras.saving.serialize_keras_object(getattr(self, name))
        argument, attribute = self.HEAD_PART
        config[argument] = keras.saving.serialize_keras_object(getattr(self, attribute))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("trainable", "dtype"):
            config.pop(key, None)
        for name in cls.PART_NAMES + cls.HEAD_PART[:1]:
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)
