"""Loading every component from every published layout, through the same steps (``steps.py``).

- ``files``: where a component's files are; ``tensors``: reading weights (memory-mapped, safe); ``families``: which
  model a checkpoint holds; ``steps``: the order every loader follows and what a component contributes.
- One module per component, holding only what is its own (key maps, config detection): ``transformer``,
  ``video_transformer`` (SANA-Video), ``wan_vae`` (SANA-Video's VAE, renamed for the host's), ``controlnet``,
  ``dcae``, and ``text_encoder`` (needs transformers, so it is imported from its module:
  ``from sana_core.load.text_encoder import load_text_encoder``).

The model files (``sana_core/transformer.py``, ``video_transformer.py``, ``controlnet.py``, ``dcae.py``,
``text_encoder.py``) hold the models only; they import nothing from here or from ``speed``.
"""

from .controlnet import load_controlnet
from .dcae import load_dcae
from .steps import DTYPES
from .transformer import load_transformer, peek_config, variant_name
from .video_transformer import is_video_transformer, load_video_transformer, video_variant_name

__all__ = ["DTYPES", "is_video_transformer", "load_controlnet", "load_dcae", "load_transformer",
           "load_video_transformer", "peek_config", "variant_name", "video_variant_name"]
