"""Gemma-2 text encoder for Sana (docs/model.md §3): loading, the complex human instruction (CHI), token selection.

Semantics follow diffusers 0.42.1 ``SanaPipeline._get_gemma_prompt_embeds`` / ``encode_prompt`` exactly, with one
deliberate difference: prompts keep their case unless ``lowercase=True`` (see ``SanaTextEncoder.encode``).

The model is transformers' ``Gemma2Model`` (the decoder, no LM head) with eager attention: transformers does not
offer SDPA for Gemma-2 (attention logit soft-capping), so eager is what ``from_pretrained`` gives diffusers too. It is
built on the meta device from ``config.json`` and filled strictly from memory-mapped weights (one copy), found and
checked by ``loading`` like the transformer's and the DC-AE's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import transformers
from transformers import Gemma2Config, Gemma2Model, GemmaTokenizerFast

from . import speed
from .errors import SanaError
from .loading import Family, Located, listing, locate, read_json, sniff, wrong_family
from .weights import dominant_dtype, load_into, read_weights, strip_prefix

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

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # either one (plus tokenizer_config.json) makes a tokenizer
_GEMMA2_TYPES = ("gemma2",)
_ALLOWED_DTYPES = (torch.bfloat16, torch.float32)


# ----------------------------------------------------------------------------------------------------------------
# Locating files


def _locate(path: Path) -> tuple[Located, Path]:
    """(the model, its tokenizer folder) for a Sana diffusers repo or a plain gemma-2 folder."""
    if path.is_file():
        raise SanaError(f"{path}: is a file; expected a folder: a Sana diffusers repo (text_encoder/ + tokenizer/) "
                        "or a gemma-2-2b-it folder (config.json, tokenizer files, model*.safetensors)")
    where = locate(path, "text_encoder")
    if where.repo is None:
        return where, where.path
    tok_dir = where.repo / "tokenizer"
    if not tok_dir.is_dir():
        raise SanaError(f"{where.repo}: has text_encoder/ but no tokenizer/ folder (found: {listing(where.repo)}); a "
                        "Sana diffusers repo needs both")
    return where, tok_dir


def _read_config(model_dir: Path) -> Gemma2Config:
    cfg_path = model_dir / "config.json"
    if not cfg_path.is_file():
        raise SanaError(f"{model_dir}: no config.json (found: {listing(model_dir)}); expected a Gemma-2 folder "
                        "(config.json, tokenizer files, model*.safetensors) or a Sana repo with text_encoder/ and "
                        "tokenizer/")
    cfg = read_json(cfg_path)
    model_type = cfg.get("model_type")
    if model_type not in _GEMMA2_TYPES:
        raise SanaError(f"{cfg_path}: model_type {model_type!r} (architectures {cfg.get('architectures')}); expected "
                        "'gemma2' (Gemma-2, e.g. gemma-2-2b-it): Sana's text encoder is Gemma-2-2B, not T5/CLIP/Gemma-1/3")
    try:
        config = Gemma2Config.from_dict(cfg)
    except (ValueError, TypeError, KeyError) as e:
        raise SanaError(f"{cfg_path}: not a valid Gemma-2 config ({str(e).splitlines()[0]})") from None
    config._attn_implementation = "eager"  # soft-capped attention; what from_pretrained picks for Gemma-2 too
    return config


def _read_decoder_weights(weight_file: Path) -> dict[str, torch.Tensor]:
    """Gemma2Model keys: a Gemma2ForCausalLM file loses its ``model.`` prefix and its (unused) ``lm_head``."""
    sd = {k: v for k, v in read_weights(weight_file).items() if not k.startswith("lm_head.")}
    sd = strip_prefix(sd, ("model.",))
    family = sniff(sd)
    if family not in (Family.GEMMA, Family.UNKNOWN):  # unknown: the strict load names what is missing
        raise wrong_family(str(weight_file), sd, family, "Gemma-2 weights",
                           "Gemma-2 decoder keys such as 'layers.0.pre_feedforward_layernorm.weight'")
    return sd


def _load_tokenizer(tok_dir: Path, vocab_size: int):
    present = [n for n in TOKENIZER_FILES if (tok_dir / n).is_file()]
    if not present:
        raise SanaError(f"{tok_dir}: no tokenizer files (found: {listing(tok_dir)}); expected tokenizer.json or "
                        "tokenizer.model (with tokenizer_config.json) from gemma-2-2b-it")
    tc_path = tok_dir / "tokenizer_config.json"
    if tc_path.is_file():
        tok_class = read_json(tc_path).get("tokenizer_class")
        if tok_class and not str(tok_class).startswith("Gemma"):
            raise SanaError(f"{tc_path}: tokenizer_class {tok_class!r}; expected GemmaTokenizer(Fast)")
    try:
        tokenizer = GemmaTokenizerFast.from_pretrained(tok_dir)
    except (OSError, ValueError, TypeError, KeyError, ImportError) as e:
        raise SanaError(f"{tok_dir}: could not load the Gemma tokenizer from {present} "
                        f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    tokenizer.padding_side = "right"  # diffusers forces this; the selection below relies on it
    if tokenizer.pad_token_id is None or tokenizer.bos_token_id is None:
        raise SanaError(f"{tok_dir}: tokenizer has no pad or bos token (pad {tokenizer.pad_token!r}, "
                        f"bos {tokenizer.bos_token!r}); expected Gemma's <pad>=0 and <bos>=2")
    if len(tokenizer) > vocab_size:
        raise SanaError(f"{tok_dir}: tokenizer has {len(tokenizer)} tokens but the model's embedding has "
                        f"{vocab_size} rows; the tokenizer and weights are from different models")
    return tokenizer


def _restore_buffers(model: Gemma2Model, config: Gemma2Config) -> None:
    """Non-persistent buffers are not in the file and stay on meta after a strict assign-load: rebuild them on CPU.

    Matches from_pretrained: the RoPE frequencies are fp32, the embedding scale √hidden (cast to the weight dtype in
    the forward).
    """
    if hasattr(model, "rotary_emb"):
        model.rotary_emb = type(model.rotary_emb)(config)
    if "embed_scale" in model.embed_tokens._buffers:
        model.embed_tokens.embed_scale = torch.tensor(config.hidden_size**0.5)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"Gemma2Model (transformers {transformers.__version__}) still has uninitialised tensors "
                           f"after loading: {left[:5]}; this loader needs updating for that transformers version")


# ----------------------------------------------------------------------------------------------------------------
# The encoder


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


def load_text_encoder(path: str | Path, dtype: torch.dtype | None = None,
                      device: torch.device | str = "cpu", int8: bool = False) -> SanaTextEncoder:
    """Load Gemma-2 + tokenizer from a Sana diffusers repo (``text_encoder/`` + ``tokenizer/``) or a plain
    gemma-2-2b-it folder (Gemma2Model or Gemma2ForCausalLM weights, single, sharded or a diffusers variant such as
    ``model.bf16.safetensors``; the LM head is ignored).

    dtype: None → bf16 if the file is bf16, else fp32. Only bf16 and fp32: Gemma-2 overflows in fp16.
    int8: store the linear and embedding weights as int8 (per-row scales), computing in ``dtype``.
    """
    path = Path(path)
    if dtype is not None and dtype not in _ALLOWED_DTYPES:
        hint = " (Gemma-2 overflows in fp16)" if dtype == torch.float16 else ""
        raise SanaError(f"{path}: text encoder dtype {dtype} is not supported{hint}; use torch.bfloat16 or "
                        "torch.float32")
    where, tok_dir = _locate(path)
    config = _read_config(where.path)
    tokenizer = _load_tokenizer(tok_dir, config.vocab_size)
    weight_file = where.weights(("model",), "text encoder")
    sd = _read_decoder_weights(weight_file)
    file_dtype = dominant_dtype(sd)
    if dtype is None:
        dtype = torch.bfloat16 if file_dtype == torch.bfloat16 else torch.float32

    with torch.device("meta"):
        model = Gemma2Model(config)
    load_into(model, sd, dtype, str(weight_file))
    del sd
    _restore_buffers(model, config)
    n_params = sum(p.numel() for p in model.parameters())
    if int8:
        from .quant import quantize

        quantize(model, dtype, "int8")
    model.eval().requires_grad_(False)
    model.to(device)

    log.info("text encoder: Gemma-2 %d layers, hidden %d, vocab %d (%.1fM params) from %s (file %s), %s on %s; "
             "tokenizer %s (%d tokens)", config.num_hidden_layers, config.hidden_size, config.vocab_size,
             n_params / 1e6, weight_file, str(file_dtype).removeprefix("torch."), str(dtype).removeprefix("torch."),
             device, tok_dir, len(tokenizer))
    return speed.apply(SanaTextEncoder(model, tokenizer, source=str(path)))
