"""Datasets: one item schema for OEQA and MCQA, loaders for the common formats, demo sets."""

from rait.data.schema import Dataset, derive_id, make_mcqa_item, make_oeqa_item

__all__ = ["Dataset", "derive_id", "make_mcqa_item", "make_oeqa_item"]
