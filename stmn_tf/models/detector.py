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
from stmn_tf.models.backbone import load_keras_applications_weights
from stmn_tf.models.backbone import resnet_backbone
from stmn_tf.models.features import DetectorFeatures
from stmn_tf.models.rfcn_head import RFCNHead
from stmn_tf.models.rpn import RPNHead
from stmn_tf.models.rpn import generate_proposals
from stmn_tf.ops import box_ops
from stmn_tf.ops import targets as targets_lib
from stmn_tf.ops.anchors import generate_anchors

LOSS_NAMES = ("rpn_class_loss", "rpn_box_loss", "class_loss", "box_loss", "total_loss")
FEATURE_STRIDE = 16


class TwoStageDetector(keras.Model):
    """Base class of `RFCN` and `STMN`; see their docstrings for the arguments."""

    def __init__(
        self,
        num_classes,
        backbone_depth=101,
        backbone_blocks=None,
        backbone_filters=None,
        backbone_stem_filters=64,
        frozen_stages=2,
        backbone_weights=None,
        backbone_norm="frozen_bn",
        feature_reduce_channels=512,
        feature_channels=1024,
        feature_dilation=6,
        rfcn_channels=512,
        ps_roi_bins=7,
        rpn_channels=512,
        anchor_scales=(64, 128, 256, 512),
        anchor_ratios=(0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_train=6000,
        rpn_post_nms_top_n_train=2000,
        rpn_pre_nms_top_n_test=6000,
        rpn_post_nms_top_n_test=300,
        rpn_nms_iou=0.7,
        rpn_min_size=0.0,
        rpn_batch_size=256,
        rpn_positive_fraction=0.5,
        rpn_positive_iou=0.7,
        rpn_negative_iou=0.3,
        num_rois=300,
        foreground_fraction=0.25,
        foreground_iou=0.5,
        background_iou_high=0.5,
        background_iou_low=0.0,
        ohem_rois=0,
        score_threshold=0.001,
        nms_iou=0.3,
        max_detections=100,
        **kwargs,
    ):
        if backbone_weights and backbone_norm != "frozen_bn":
            # Checked before anything is built.
            raise ValueError(
                f"backbone_weights {backbone_weights!r} are keras.applications batch-norm "
                f"weights; they need backbone_norm='frozen_bn', not {backbone_norm!r}"
            )
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.backbone_depth = backbone_depth
        self.backbone_blocks = tuple(backbone_blocks) if backbone_blocks else None
        self.backbone_filters = tuple(backbone_filters) if backbone_filters else None
        self.backbone_stem_filters = backbone_stem_filters
        self.frozen_stages = frozen_stages
        self.backbone_norm = backbone_norm
        self.feature_reduce_channels = feature_reduce_channels
        self.feature_channels = feature_channels
        self.feature_dilation = feature_dilation
        self.rfcn_channels = rfcn_channels
        self.ps_roi_bins = ps_roi_bins
        self.rpn_channels = rpn_channels
        self.anchor_scales = tuple(float(s) for s in anchor_scales)
        self.anchor_ratios = tuple(float(r) for r in anchor_ratios)
        self.rpn_pre_nms_top_n_train = rpn_pre_nms_top_n_train
        self.rpn_post_nms_top_n_train = rpn_post_nms_top_n_train
        self.rpn_pre_nms_top_n_test = rpn_pre_nms_top_n_test
        self.rpn_post_nms_top_n_test = rpn_post_nms_top_n_test
        self.rpn_nms_iou = rpn_nms_iou
        self.rpn_min_size = rpn_min_size
        self.rpn_batch_size = rpn_batch_size
        self.rpn_positive_fraction = rpn_positive_fraction
        self.rpn_positive_iou = rpn_positive_iou
        self.rpn_negative_iou = rpn_negative_iou
        self.num_rois = num_rois
        self.foreground_fraction = foreground_fraction
        self.foreground_iou = foreground_iou
        self.background_iou_high = background_iou_high
        self.background_iou_low = background_iou_low
        self.ohem_rois = ohem_rois
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.max_detections = max_detections

        self.backbone = resnet_backbone(
            depth=backbone_depth,
            blocks=self.backbone_blocks,
            filters=self.backbone_filters,
            stem_filters=backbone_stem_filters,
            frozen_stages=frozen_stages,
            norm=backbone_norm,
            name="backbone",
        )
        self.features = DetectorFeatures(
            feature_reduce_channels, feature_channels, feature_dilation, name="features"
        )
        self.rpn_head = RPNHead(
            len(self.anchor_scales) * len(self.anchor_ratios), rpn_channels, name="rpn_head"
        )
        self.rfcn_head = RFCNHead(
            num_classes, rfcn_channels, ps_roi_bins, FEATURE_STRIDE, name="rfcn_head"
        )
        self._loss_trackers = {name: keras.metrics.Mean(name=name) for name in LOSS_NAMES}
        self._build_head_features()
        self._build_by_running()
        if backbone_weights:
            load_keras_applications_weights(self.backbone, backbone_weights, backbone_depth)

    # -- subclass hooks -------------------------------------------------------

    def _build_head_features(self):
        """Creates the layers between `F_t` and the R-FCN head."""
        raise NotImplementedError("abstract: RFCN and STMN define it")

    def head_features(self, features, training=False):
        """`[B, T, h, w, feature_channels]` -> `[B, T, h, w, C_head]`, the R-FCN head's input."""
        raise NotImplementedError("abstract: RFCN and STMN define it")

    # -- building -------------------------------------------------------------

    def _build_by_running(self):
        # Runs a 1-frame 32x32 clip once so that every layer has its weights before
        # fit(), load_weights() or a tf.function trace.
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
        anchors = generate_anchors(
            shape[1], shape[2], image_size[0], image_size[1], FEATURE_STRIDE,
            self.anchor_scales, self.anchor_ratios,
        )
        if proposals is not None:
            rois = self._flatten(tf.cast(proposals, tf.float32))
            valid = box_ops.box_area(rois) > 0.0
        else:
            rois, _, valid = generate_proposals(
                logits,
                deltas,
                anchors,
                self.rpn_pre_nms_top_n_train if training else self.rpn_pre_nms_top_n_test,
                self.rpn_post_nms_top_n_train if training else self.rpn_post_nms_top_n_test,
                self.rpn_nms_iou,
                self.rpn_min_size,
            )
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
            seed = tf.cast(inputs["sampling_seed"], tf.int64)
            rpn_seed = tf.random.experimental.stateless_fold_in(seed, 1)
            roi_seed = tf.random.experimental.stateless_fold_in(seed, 2)
        rpn = targets_lib.rpn_targets(
            first["anchors"], gt_boxes, gt_labels, self.rpn_batch_size,
            self.rpn_positive_fraction, self.rpn_positive_iou, self.rpn_negative_iou,
            seed=rpn_seed,
        )
        rpn_class_loss, rpn_box_loss = losses_lib.rpn_losses(
            first["rpn_logits"], first["rpn_deltas"], rpn["labels"], rpn["box_targets"]
        )
        rois = targets_lib.sample_rois(
            first["rois"], first["rois_valid"], gt_boxes, gt_labels, self.num_rois, self.foreground_fraction,
            self.foreground_iou, self.background_iou_high, self.background_iou_low,
            seed=roi_seed,
        )
        head_input = self._flatten(self.head_features(features, training=training))
        class_logits, box_deltas = self.rfcn_head(head_input, rois["rois"], image_size)
        class_loss, box_loss = losses_lib.rfcn_losses(
            class_logits, box_deltas, rois["labels"], rois["valid"], rois["foreground"],
            rois["box_targets"], ohem_rois=self.ohem_rois,
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
            self, self.optimizer, inputs, getattr(self, "weight_decay", 0.0),
            getattr(self, "clip_norm", 0.0),
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
        """The head's outputs over N = B * T frames -> the `predict_step` dict.

        Softmax scores, class-agnostic boxes decoded from the RoIs, then per-class
        NMS (R-FCN's test procedure).

        Args:
          class_logits: `[N, R, C + 1]`, background first.
          box_deltas: `[N, R, 4]` encoded against the RoIs (`box_ops.HEAD_BOX_WEIGHTS`).
          rois: `[N, R, 4]` normalised yxyx.
          valid: `[N, R]` bool, the RoIs that are not padding.
          batch, time: B and T (N = B * T).

        Returns:
          the `predict_step` dict.
        """
        scores = tf.nn.softmax(tf.cast(class_logits, tf.float32), axis=-1)[..., 1:]
        scores = scores * tf.cast(valid, tf.float32)[..., None]  # [N, R, C]
        boxes = box_ops.clip_boxes_normalized(
            box_ops.decode_boxes_yxyx(box_deltas, tf.cast(rois, tf.float32), box_ops.HEAD_BOX_WEIGHTS)
        )
        nmsed = tf.image.combined_non_max_suppression(
            boxes[:, :, None, :],
            scores,
            max_output_size_per_class=self.max_detections,
            max_total_size=self.max_detections,
            iou_threshold=self.nms_iou,
            score_threshold=self.score_threshold,
            clip_boxes=False,
        )
        return {
            "detection_boxes": self._unflatten(nmsed.nmsed_boxes, batch, time),
            "detection_scores": self._unflatten(nmsed.nmsed_scores, batch, time),
            "detection_classes": self._unflatten(tf.cast(nmsed.nmsed_classes, tf.int32) + 1, batch, time),
            "num_detections": tf.reshape(nmsed.valid_detections, [batch, time]),
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
        for key in (
            "num_classes backbone_depth backbone_blocks backbone_filters backbone_stem_filters "
            "frozen_stages backbone_norm feature_reduce_channels feature_channels feature_dilation "
            "rfcn_channels ps_roi_bins rpn_channels anchor_scales anchor_ratios "
            "rpn_pre_nms_top_n_train rpn_post_nms_top_n_train rpn_pre_nms_top_n_test "
            "rpn_post_nms_top_n_test rpn_nms_iou rpn_min_size rpn_batch_size "
            "rpn_positive_fraction rpn_positive_iou rpn_negative_iou num_rois "
            "foreground_fraction foreground_iou background_iou_high background_iou_low "
            "ohem_rois score_threshold nms_iou max_detections"
        ).split():
            config[key] = getattr(self, key)
        # backbone_weights is left out: the weights travel with the saved model.
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("trainable", "dtype"):
            config.pop(key, None)
        return cls(**config)
