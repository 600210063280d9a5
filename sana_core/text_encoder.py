"""Gemma-2 text encoder for Sana (docs/model.md §3): the complex human instruction (CHI), token selection;
``load/text_encoder.py`` loads it.

Semantics follow diffusers 0.42.1 ``SanaPipeline._get_gemma_prompt_embeds`` / ``encode_prompt`` exactly, with one
deliberate difference: prompts keep their case unless ``lowercase=True`` (see ``SanaTextEncoder.encode``).

The model is transformers' ``Gemma2Model`` (the decoder, no LM head) with eager attention: transformers does not
offer SDPA for Gemma-2 (attention logit soft-capping), so eager is what ``from_pretrained`` gives diffusers too. It is
built on the meta device from ``config.json`` and filled strictly from memory-mapped weights (one copy), found and
checked by the same loading steps as the transformer's and the DC-AE's.
"""

from __future__ import annotations

import logging

import torch
from transformers import Gemma2Model

from .errors import SanaError

log = logging.getLogger(__name__)

# diffusers' default `complex_human_instruction` (SanaPipeline.__call__), verbatim. Note the single quotes around
# 'Enhanced prompt' (NVlabs configs use double quotes, which tokenise differently) and the trailing space of the last
# line, which merges into the prompt's first word.
DEFAULT_CHI: list[str] = [
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for image generation. Evaluate the level of detail in the user prompt:",  # noqa: E501
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial relationships to create vivid and concrete scenes.",  # noqa: E501
    "- If the prompt is already detailed, refine and enhance the existing details slightly without overcomplicating.",  # noqa: E501
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",  # noqa: E501
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass skyscrapers.",  # noqa: E501
    "Please generate only the enhanced description for the prompt below and avoid including any additional commentary or evaluations:",  # noqa: E501
    "User Prompt: ",
]

class SanaTextEncoder:
    """A loaded Gemma-2 decoder and its tokenizer; ``encode`` gives Sana's caption embeddings and masks."""

    def __init__(self, model: Gemma2Model, tokenizer, source: str = "") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"
        self.source = source

    @property
    def dtype(self) -> torch.dtype:
        return self.model.norm.weight.dtype  # (the embedding may be stored in 8 bits)

    @property
    def device(self) -> torch.device:
        return self.model.norm.weight.device

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    def to(self, device: torch.device | str) -> SanaTextEncoder:
        """Move the model (in place; the dtype never changes: Gemma-2 runs in bf16 or fp32 only). Returns self."""
        if isinstance(device, torch.dtype):
            raise SanaError(f"SanaTextEncoder.to({device}): only a device may be given; the dtype is chosen at load")
        self.model.to(device)
        return self

    def encode(self, prompts: list[str] | str, *, chi: list[str] | str | None = DEFAULT_CHI, max_length: int = 300,
               lowercase: bool = False, clean_caption: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts → (embeddings (B, max_length, hidden) in the encoder dtype, mask (B, max_length) int64).

        diffusers ``_get_gemma_prompt_embeds`` + the selection in ``encode_prompt`` (docs/model.md §3.3):
        - each prompt is stripped; **it keeps its case unless ``lowercase=True``**. diffusers lowercases every prompt;
          we do not by default because case matters for text rendered in the image ("OPEN" vs "open"). Pass
          ``lowercase=True`` for exact diffusers parity.
        - with a CHI (a list of lines joined by "\\n", or an already-joined string): text = CHI + prompt, tokenised
          (BOS first, right-padded/truncated) to N_chi + max_length - 2 tokens where N_chi = len(encode(CHI)) counts
          the BOS; Gemma runs on all of it, then position 0 (BOS) and the last max_length - 1 positions are kept.
        - without a CHI (None, "", []): tokenised to max_length, no selection.
        Every prompt keeps its own mask. A prompt past the window is truncated at the end and logged (one warning
        per call naming how many tokens were dropped).
        - ``clean_caption``: each prompt is first cleaned as the training captions were (``captions.py``; this
          lowercases it), as diffusers' ``clean_caption=True``.
        """
        prompts = self._prepare(prompts, lowercase)
        if clean_caption:
            from .captions import clean

            prompts = [clean(p) for p in prompts]
        if max_length < 1:
            raise SanaError(f"max_length={max_length}: must be at least 1 (Sana uses 300)")
        if isinstance(chi, (list, tuple)):
            if not all(isinstance(line, str) for line in chi):
                raise SanaError(f"chi: expected a list of strings, found {[type(x).__name__ for x in chi]}")
            chi_text = "\n".join(chi)
        elif chi is None or isinstance(chi, str):
            chi_text = chi or ""
        else:
            raise SanaError(f"chi: expected a list of strings, a string or None, found {type(chi).__name__}")
        on = bool(chi)  # diffusers: `if not complex_human_instruction` → off (None, "", [])

        if on:
            n_chi = len(self.tokenizer.encode(chi_text))  # includes the BOS
            total = n_chi + max_length - 2
            texts = [chi_text + p for p in prompts]
        else:
            total = max_length
            texts = prompts
        embeds, mask = self._run(texts, total, window=max_length - 1 if on else max_length)
        if on:
            # select_index = [0] + [-(max_length-1), …, -1]: BOS + the last max_length-1 positions (B, total, H) →
            # (B, max_length, H). Negative indices as in diffusers (they wrap if the CHI encodes to the BOS alone).
            select = [0] + list(range(-max_length + 1, 0))
            embeds, mask = embeds[:, select], mask[:, select]
        return embeds, mask

    def encode_negative(self, prompts: list[str] | str, max_length: int = 300, lowercase: bool = False,
                        clean_caption: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The negative / unconditional path (docs/model.md §3.4): never a CHI, no selection, the prompt's own mask.

        For "" only the BOS is valid. Same case rule as ``encode`` (diffusers lowercases the negative prompt too).
        """
        return self.encode(prompts, chi=None, max_length=max_length, lowercase=lowercase, clean_caption=clean_caption)

    # --------------------------------------------------------------------------------------------------------

    @staticmethod
    def _prepare(prompts: list[str] | str, lowercase: bool) -> list[str]:
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise SanaError(f"prompts: expected a non-empty list of strings, found {prompts!r:.80}")
        bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
        if bad:
            raise SanaError(f"prompts: expected strings, found {bad}")
        return [p.strip().lower() if lowercase else p.strip() for p in prompts]

    def _run(self, texts: list[str], total: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise to exactly ``total`` tokens (as diffusers does) and run Gemma: (B, total, H), (B, total) int64."""
        tok = self.tokenizer(texts, padding="max_length", max_length=total, truncation=True, add_special_tokens=True,
                             return_tensors="pt")
        full = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=True)["input_ids"]]
        over = [(i, n - total) for i, n in enumerate(full) if n > total]
        if over:
            detail = ", ".join(f"prompt {i}: {d} tokens dropped" for i, d in over)
            log.warning("%d of %d prompts exceed the %d-token text window and were truncated at the end (%s)",
                        len(over), len(texts), window, detail)
        ids = tok.input_ids.to(self.device)
        mask = tok.attention_mask.to(device=self.device, dtype=torch.int64)
        with torch.no_grad():
            out = self._forward(ids, mask)
        return out.to(self.dtype), mask

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # after the norm
