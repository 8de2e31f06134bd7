"""Data: LLaVA-style records, validation, the supervised data set, collator, sampler and synthetic data."""

from owl2.data.checks import Problem, Sample, iter_problems, load_image, validate_record
from owl2.data.dataset import Collator, SupervisedDataset
from owl2.data.records import DataFileError, RecordError, RecordFile
from owl2.data.sampler import LengthGroupedSampler
from owl2.data.synthetic import build_synthetic_tokenizer, write_synthetic_dataset

__all__ = [
    "Collator",
    "DataFileError",
    "LengthGroupedSampler",
    "Problem",
    "RecordError",
    "RecordFile",
    "Sample",
    "SupervisedDataset",
    "build_synthetic_tokenizer",
    "iter_problems",
    "load_image",
    "validate_record",
    "write_synthetic_dataset",
]
