"""Checkpoint formats: pure key/tensor maps between owl2 and other layouts, and their I/O.

- `official`: the official mPLUG-Owl2 release <-> owl2 (config and key maps, sin-cos buffers).
- `llama`: transformers `LlamaForCausalLM` <-> the owl2 decoder.
- `clip`: transformers CLIP vision tower -> the owl2 ViT.
- `io`: reading folders shard by shard, bounded sharded writing, atomic output.
- `convert`: folder-to-folder conversions built from the above (what `tools/convert_checkpoint.py` runs).
"""
