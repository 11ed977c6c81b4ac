"""SequenceExample schema, converters, synthetic videos and the tf.data pipeline.

    from stmn_tf import data
    patterns = data.ensure_synthetic_dataset("/tmp/stmn_synthetic")
    config = data.synthetic_data_config("/tmp/stmn_synthetic", "train")
    dataset = data.build_dataset(config)            # or strategy.distribute_datasets_from_function(
                                                    #        data.make_dataset_fn(config))
"""

from stmn_tf.data.config import DataConfig
from stmn_tf.data.config import ImageSizeConfig
from stmn_tf.data.config import SyntheticConfig
from stmn_tf.data.config import synthetic_data_config
from stmn_tf.data.pipeline import build_dataset
from stmn_tf.data.pipeline import make_dataset_fn
from stmn_tf.data.synthetic import ensure_synthetic_dataset
from stmn_tf.data.vid_classes import VID_CLASSES
