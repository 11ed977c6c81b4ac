"""Keras 3 layers of STMN: BN*, MatchTrans, the STMM and ConvGRU cells and recurrences."""
