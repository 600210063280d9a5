"""The speed layer: faster forms of the reference model files, installed by one function behind one switch.

``apply(obj)`` swaps the classes of a loaded model's modules for their fast subclasses (``speed/transformer.py``,
``speed/dcae.py``, ``speed/text_encoder.py``); ``apply(obj, False)`` swaps them back. The loaders call it with the
environment's choice (``SANA_SPEED=0`` turns everything off). Each fast form decides per call, from the input's device
and dtype, whether it runs or falls back to the reference forward (``policy.py``: the one table of where each runs).
State dicts, parameters and outputs' meaning are unchanged; docs/architecture.md explains the layer.
"""

from __future__ import annotations

import sys

from . import dcae, policy, transformer

_TEXT_ENCODER = __name__.rsplit(".", 1)[0] + ".text_encoder"  # the reference module; it needs transformers


def _forms() -> dict[type, type]:
    forms = {**transformer.FORMS, **dcae.FORMS}
    if _TEXT_ENCODER in sys.modules:  # a text encoder exists only once its module is imported
        from . import text_encoder

        forms.update(text_encoder.FORMS)
    return forms


def apply(obj, on: bool | None = None):
    """Install (``on``) or remove the speed forms on ``obj`` and, for a module, every submodule. ``on=None`` reads
    the switch (``SANA_SPEED``). Returns ``obj``."""
    forms = _forms()
    swap = forms if policy.enabled(on) else {fast: ref for ref, fast in forms.items()}
    parts = obj.modules() if hasattr(obj, "modules") else [obj]
    for part in parts:
        cls = swap.get(type(part))
        if cls is not None:
            part.__class__ = cls
    return obj
