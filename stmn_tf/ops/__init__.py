"""Pure functions and custom-op wrappers."""

from stmn_tf.ops.bn_star import bn_star
from stmn_tf.ops.match_trans import custom_op_available
from stmn_tf.ops.match_trans import load_library
from stmn_tf.ops.match_trans import match_trans
from stmn_tf.ops.match_trans import match_trans_coefficients
from stmn_tf.ops import anchors
from stmn_tf.ops import box_ops
from stmn_tf.ops import ps_roi_pooling
from stmn_tf.ops import targets
from stmn_tf.ops.ps_roi_pooling import ps_roi_average_pool
