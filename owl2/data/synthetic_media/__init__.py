"""Synthetic files for OneLLM's modalities, one module each: what `owl2.data.synthetic_onellm` writes.

Each module has its question types and a `make(rng, config, folder, stem) -> Item` that writes one input's
files into `folder` (named from `stem`), sized by the `MediaConfig`, and returns the record's value for the
modality's key (paths relative to `folder`'s parent, the data set's image folder), a caption and one question
per type. Everything is a function of `rng`.
"""
