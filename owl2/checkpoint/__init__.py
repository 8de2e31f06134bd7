"""Checkpoint formats: pure key/tensor maps between owl2 and other layouts, and their I/O.

- `official`: the official mPLUG-Owl2 release <-> owl2 (config and key maps, sin-cos buffers).
- `onellm`: the official OneLLM release <-> `OneLLMModel` (config read from the release's shapes, key maps).
- `llama`: transformers `LlamaForCausalLM` <-> the owl2 decoder.
- `meta_llama`: Meta's LLaMA layout (`consolidated.*.pth`, `params.json`) <-> transformers `LlamaForCausalLM`.
- `clip`: transformers CLIP vision tower -> the owl2 ViT.
- `keymap`: a table of key templates, read in either direction.
- `io`: reading folders shard by shard, bounded sharded writing, atomic output.
- `convert`, `convert_onellm`: folder-to-folder conversions built from the above (what `tools/convert_checkpoint.py`
  runs), for mPLUG-Owl2 and for OneLLM.
"""
