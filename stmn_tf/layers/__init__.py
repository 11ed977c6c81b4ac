"""Keras 3 layers of STMN: BN*, MatchTrans, the STMM and ConvGRU cells and recurrences."""

from stmn_tf.layers.bidirectional_stmm import BidirectionalSTMM
from stmn_tf.layers.bn_star import BNStar
from stmn_tf.layers.conv_gru import ConvGRU
from stmn_tf.layers.conv_gru_cell import ConvGRUCell
from stmn_tf.layers.match_trans import MatchTrans
from stmn_tf.layers.stmm import STMM
from stmn_tf.layers.stmm_cell import STMMCell
