"""The text encoder's speed form (the reference is ``sana_core/text_encoder.py``): on a GPU each prompt length is one
captured Gemma-2 forward, replayed (``cudagraph.py``); ``speed.apply`` installs it."""

from __future__ import annotations

import torch

from .. import caches
from ..layers import casts_per_call
from ..text_encoder import SanaTextEncoder
from . import policy
from .cudagraph import GraphCache


class GraphedTextEncoder(SanaTextEncoder):
    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Gemma as a replayed CUDA graph. transformers builds its masks with a host-to-device copy, which a graph
        cannot hold, so the graph takes them ready-made (its layers' mask mapping, transformers ≥ 5). The first call
        of each shape checks that form against the model's own masks, bit for bit; where it differs, or the window is
        shorter than the text, Gemma runs as usual."""
        if not policy.cuda_graphs(ids) or casts_per_call(self.model):  # a host's per-call casts are not replayable
            return super()._forward(ids, mask)
        length = ids.shape[1]
        if length > (getattr(self.model.config, "sliding_window", None) or length):
            return super()._forward(ids, mask)
        key = (tuple(ids.shape), ids.device)
        mask_form_ok = caches.kept(self, "mask_form_ok", dict)  # shape → the form gives Gemma's output
        if key not in mask_form_ok:
            want = super()._forward(ids, mask)
            try:
                same = torch.equal(self._forward_masks(ids, _additive_mask(mask, self.dtype)), want)
            except (TypeError, ValueError, KeyError, AttributeError, IndexError, RuntimeError):  # no ready-made masks
                same = False
            mask_form_ok[key] = same
            return want
        if not mask_form_ok[key]:
            return super()._forward(ids, mask)
        return self._graphs().run(self.model, self._forward_masks, (ids, _additive_mask(mask, self.dtype)), ())

    def _forward_masks(self, ids: torch.Tensor, additive: torch.Tensor) -> torch.Tensor:
        masks = {"full_attention": additive, "sliding_attention": additive}
        return self.model(input_ids=ids, attention_mask=masks, use_cache=False).last_hidden_state

    def _graphs(self) -> GraphCache:
        return caches.kept(self, "graphs", GraphCache)

    def to(self, device: torch.device | str) -> SanaTextEncoder:
        caches.drop(self, "graphs")  # moved weights: captured graphs are stale
        return super().to(device)


FORMS = {SanaTextEncoder: GraphedTextEncoder}


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 0/1 → the (B, 1, L, L) causal + padding mask transformers gives eager attention: 0 where a query may
    attend a key, the dtype's lowest value elsewhere."""
    length = mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    allowed = causal[None, None] & mask[:, None, None, :].bool()
    return torch.zeros(allowed.shape, dtype=dtype, device=mask.device).masked_fill(~allowed, torch.finfo(dtype).min)


