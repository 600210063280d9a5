"""sana_core: the Sana text-to-image family in plain PyTorch, at numerical parity with diffusers. No host imports.

One concern per module: ``transformer`` (Linear DiT), ``loader`` (finding/loading transformers, key maps, variant
detection), ``dcae`` + ``dcae_blocks`` (DC-AE f32c32, tiling), ``text_encoder`` (Gemma-2 + CHI; needs transformers),
``sampling`` (schedules, Flow-DPM-Solver, Flow-Euler, Sprint), ``guidance`` (CFG, PAG), ``bins`` (resolution binning),
``pipeline`` (prompt → image), ``taesana`` (preview decoder), ``weights`` (safe, memory-mapped reading).
Submodules are imported explicitly so that a missing optional dependency only affects what needs it.
"""
