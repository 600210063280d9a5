"""sana_core: the Sana text-to-image family in plain PyTorch, at numerical parity with diffusers. No host imports.

The reference model files read top to bottom in diffusers' op order and hold the models only: ``transformer``
(Linear DiT), ``controlnet``, ``dcae_blocks`` + ``dcae`` (DC-AE f32c32, tiling), ``text_encoder`` (Gemma-2 + CHI;
needs transformers), ``taesana`` (previews). ``load/`` loads each of them from every published layout through the
same steps. Around them: ``sampling`` (schedules, Flow-DPM-Solver, Flow-Euler, Sprint), ``guidance`` (CFG, PAG),
``bins`` (resolution binning), ``pipeline`` (prompt → image), ``quant`` (8-bit storage), ``lora``. ``speed/`` holds
the faster forms, installed by ``speed.apply`` behind one switch. docs/architecture.md has the map.
Submodules are imported explicitly so that a missing optional dependency only affects what needs it.
"""
