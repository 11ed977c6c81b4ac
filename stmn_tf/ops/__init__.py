"""Pure functions and custom-op wrappers."""

from stmn_tf.ops.match_trans import custom_op_available
from stmn_tf.ops.match_trans import load_library
from stmn_tf.ops.match_trans import match_trans
from stmn_tf.ops.match_trans import match_trans_coefficients
