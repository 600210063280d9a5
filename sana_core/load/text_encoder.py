"""The text encoder's part in loading (docs/model.md §3): a Sana diffusers repo (``text_encoder/`` + ``tokenizer/``)
or a plain gemma-2-2b-it folder; its Gemma-2 config, tokenizer, and the buffers the file does not hold. Needs
transformers."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import transformers
from transformers import Gemma2Config, Gemma2Model, GemmaTokenizerFast

from .. import speed
from ..errors import SanaError
from ..text_encoder import SanaTextEncoder
from .families import Family, wrong_family
from .files import Located, listing, locate, read_json
from .steps import Component, build, read_checkpoint
from .tensors import dominant_dtype

log = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")  # either one (plus tokenizer_config.json) makes a tokenizer
_GEMMA2_TYPES = ("gemma2",)
_ALLOWED_DTYPES = (torch.bfloat16, torch.float32)


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


# Gemma2Model keys: a Gemma2ForCausalLM file loses its ``model.`` prefix and its (unused) ``lm_head``; a key set
# sniff does not know is taken, and the strict load names what is missing.
GEMMA2 = Component(
    name="text encoder", folder="text_encoder", stems=("model",), prefixes=("model.",),
    layouts={Family.GEMMA: None, Family.UNKNOWN: None}, drop=("lm_head.",),
    wrong_family=lambda source, sd, family: wrong_family(
        source, sd, family, "Gemma-2 weights", "Gemma-2 decoder keys such as 'layers.0.pre_feedforward_layernorm.weight'"))


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
    ckpt = read_checkpoint(GEMMA2, where)
    file_dtype = dominant_dtype(ckpt.state_dict)
    if dtype is None:
        dtype = torch.bfloat16 if file_dtype == torch.bfloat16 else torch.float32
    model, n_params = build(lambda: Gemma2Model(config), ckpt, dtype, device, storage="int8" if int8 else None,
                            after_load=lambda m: _restore_buffers(m, config))
    log.info("text encoder: Gemma-2 %d layers, hidden %d, vocab %d (%.1fM params) from %s (file %s), %s on %s; "
             "tokenizer %s (%d tokens)", config.num_hidden_layers, config.hidden_size, config.vocab_size,
             n_params / 1e6, ckpt.source, str(file_dtype).removeprefix("torch."), str(dtype).removeprefix("torch."),
             device, tok_dir, len(tokenizer))
    return speed.apply(SanaTextEncoder(model, tokenizer, source=str(path)))
