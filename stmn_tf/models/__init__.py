"""Backbones, heads, the static R-FCN and STMN detectors, weight transfer."""

from stmn_tf.models.backbone import load_keras_applications_weights
from stmn_tf.models.backbone import resnet_backbone
from stmn_tf.models.builders import MODEL_BUILDERS
from stmn_tf.models.builders import build_backbone
from stmn_tf.models.builders import build_model
from stmn_tf.models.config import ModelConfig
from stmn_tf.models.config import tiny_model_config
from stmn_tf.models.detector_transfer import transfer_rfcn_file_to_stmn
from stmn_tf.models.detector_transfer import transfer_rfcn_to_stmn
from stmn_tf.models.features import DetectorFeatures
from stmn_tf.models.rfcn import RFCN
from stmn_tf.models.rfcn_head import RFCNHead
from stmn_tf.models.rpn import RPNHead
from stmn_tf.models.stmn import STMN
from stmn_tf.models.weight_transfer import transfer_conv_to_memory
from stmn_tf.variants import VARIANTS
from stmn_tf.variants import Variant
