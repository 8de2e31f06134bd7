"""Data: LLaVA-style records, validation, the supervised data set, collator, sampler and synthetic data."""

from owl2._lazy import lazy_exports

_EXPORTS = {
    "Problem": "owl2.data.checks",
    "Sample": "owl2.data.checks",
    "iter_problems": "owl2.data.checks",
    "load_image": "owl2.data.checks",
    "validate_record": "owl2.data.checks",
    "Collator": "owl2.data.dataset",
    "ConcatDataset": "owl2.data.dataset",
    "SupervisedDataset": "owl2.data.dataset",
    "DataFileError": "owl2.data.records",
    "RecordError": "owl2.data.records",
    "RecordFile": "owl2.data.records",
    "LengthGroupedSampler": "owl2.data.sampler",
    "Source": "owl2.data.mixture",
    "mixture_batches": "owl2.data.mixture",
    "build_synthetic_tokenizer": "owl2.data.synthetic",
    "write_synthetic_dataset": "owl2.data.synthetic",
    "write_synthetic_onellm_dataset": "owl2.data.synthetic_onellm",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
