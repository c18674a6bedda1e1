"""Datasets: one item schema for OEQA and MCQA, loaders for the common formats, demo sets."""

from rait.data.loaders import FORMATS, alias_target, choose_target, default_shot_source, detect_format, load_dataset
from rait.data.schema import Dataset, derive_id, make_mcqa_item, make_oeqa_item
from rait.data.split import DataOptions, carve, load_with_options, take

__all__ = ["Dataset", "DataOptions", "FORMATS", "alias_target", "carve", "choose_target", "default_shot_source",
           "derive_id", "detect_format", "load_dataset", "load_with_options", "make_mcqa_item",
           "make_oeqa_item", "take"]
