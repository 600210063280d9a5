"""sana_core: the Sana text-to-image family in plain PyTorch, at numerical parity with diffusers. No host imports.

The reference model files read top to bottom in diffusers' op order: ``transformer`` (Linear DiT), ``dcae_blocks`` +
``dcae`` (DC-AE f32c32, tiling), ``text_encoder`` (Gemma-2 + CHI; needs transformers). Around them: ``loading``
(finding weight files, configs, model families), ``weights`` (safe, memory-mapped reading), ``loader`` (transformer
variants and key maps), ``sampling`` (schedules, Flow-DPM-Solver, Flow-Euler, Sprint), ``guidance`` (CFG, PAG),
``bins`` (resolution binning), ``pipeline`` (prompt → image), ``quant`` (int8 storage), ``taesana`` (previews).
``speed/`` holds the faster forms, installed by ``speed.apply`` behind one switch. docs/architecture.md has the map.
Submodules are imported explicitly so that a missing optional dependency only affects what needs it.
"""
