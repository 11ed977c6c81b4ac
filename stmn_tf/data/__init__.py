"""SequenceExample schema, converters, synthetic videos and the tf.data pipeline."""
