"""Offline text-encoder fixtures (docs/model.md §9.14): a tiny trained Gemma-style tokenizer and a tiny random Gemma-2.

Nothing is downloaded. ``build_tokenizer`` trains a small BPE with the `tokenizers` library on a built-in corpus that
holds the default complex human instruction and sample prompts, so tokens merge as they do with the real tokenizer
(``"User Prompt: "`` ends in a lone ``"▁"`` that merges into the first prompt word). ``build_tiny_gemma`` writes the
same tiny random Gemma-2 (noise of std 0.02 on every parameter, so outputs have a real dynamic range) in the two
layouts the loader accepts: a Sana diffusers repo and a plain gemma-2-2b-it-style folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import Gemma2Config, Gemma2ForCausalLM, Gemma2Model, GemmaTokenizerFast

# The Sana transformer's caption_channels must equal this (Gemma's hidden size); tiny transformers in other tests
# use it.
TINY_GEMMA_HIDDEN = 64

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]  # ids 0..4, as in the real Gemma vocabulary
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]  # byte fallback pieces, as in the real Gemma vocabulary

# Kept verbatim in sync with sana_core.text_encoder.DEFAULT_CHI by the tests (not imported: a fixture must not
# depend on the code under test).
_CHI = [
    "Given a user prompt, generate an 'Enhanced prompt' that provides detailed visual descriptions suitable for "
    "image generation. Evaluate the level of detail in the user prompt:",
    "- If the prompt is simple, focus on adding specifics about colors, shapes, sizes, textures, and spatial "
    "relationships to create vivid and concrete scenes.",
    "- If the prompt is already detailed, refine and enhance the existing details slightly without "
    "overcomplicating.",
    "Here are examples of how to transform or refine prompts:",
    "- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat curled up in a round shape, sleeping "
    "peacefully on a warm sunny windowsill, surrounded by pots of blooming red flowers.",
    "- User Prompt: A busy city street -> Enhanced: A bustling city street scene at dusk, featuring glowing street "
    "lamps, a diverse crowd of people in colorful clothing, and a double-decker bus passing by towering glass "
    "skyscrapers.",
    "Please generate only the enhanced description for the prompt below and avoid including any additional "
    "commentary or evaluations:",
    "User Prompt: ",
]

SAMPLE_PROMPTS = [
    "a cat sleeping on a warm windowsill",
    "A red fox in the snow, golden hour, photorealistic",
    "A neon sign that reads \"OPEN 24 HOURS\" above a diner",
    "portrait of an old fisherman, dramatic lighting, 85mm",
    "a watercolor painting of a lighthouse on a cliff at sunset",
    "Cyberpunk city street at night with rain and reflections",
    "a bowl of ramen with chopsticks, studio photo",
    "The Eiffel Tower made of glass, surrounded by flowers",
    "an astronaut riding a horse on the moon",
    "Two robots playing chess in a quiet library",
    "a tiny house in a forest, morning fog, soft light",
    "A poster with the words 'Hello World' in bold letters",
]

_CORPUS = _CHI + SAMPLE_PROMPTS + [p.lower() for p in SAMPLE_PROMPTS] + [
    "a photo of a dog, a photo of a cat, a photo of a bird, a painting of a tree",
    "the quick brown fox jumps over the lazy dog; THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "colors: red, green, blue, yellow, purple, orange, black, white, pink, brown, gray",
    "high quality, highly detailed, sharp focus, 4k, 8k, cinematic, illustration, digital art",
]


def _train_bpe(vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train a BPE on the corpus; return (vocab with specials and byte pieces first, merges)."""
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    # Training splits on spaces (sentencepiece's split_by_whitespace): pieces are "▁word"-style, never cross words.
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False)
    trainer_tok.train_from_iterator(_CORPUS * 4, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    learned = [t for t, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]) if t not in SPECIAL_TOKENS]
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + BYTE_TOKENS + learned)}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]
    return vocab, merges


def build_tokenizer(directory: str | Path, vocab_size: int = 700) -> Path:
    """Train and save a tiny Gemma-style tokenizer; return its folder.

    The backend mirrors the real gemma-2 ``tokenizer.json``: spaces normalised to "▁" with no pre-tokenizer, BPE with
    byte fallback (so CJK/emoji become byte pieces, not <unk>), a template post-processor that prepends <bos> and no
    <eos>. Wrapped as transformers' GemmaTokenizerFast and written with ``save_pretrained``.
    """
    directory = Path(directory)
    vocab, merges = _train_bpe(vocab_size)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "▁")
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", vocab["<bos>"])])
    backend.add_special_tokens(SPECIAL_TOKENS)
    tok = GemmaTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                             unk_token="<unk>", mask_token="<mask>", add_bos_token=True, add_eos_token=False)
    tok.padding_side = "right"
    directory.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(directory)
    return directory


def tiny_gemma_config(vocab_size: int, hidden_size: int = TINY_GEMMA_HIDDEN) -> Gemma2Config:
    """A Gemma-2 with every structural feature of the 2B one (GQA, sliding/full alternation, soft-caps), toy-sized."""
    return Gemma2Config(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
        max_position_embeddings=8192, rms_norm_eps=1e-6, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
        hidden_activation="gelu_pytorch_tanh", pad_token_id=0, eos_token_id=1, bos_token_id=2,
        attn_implementation="eager",
    )


@dataclass(frozen=True)
class TinyGemma:
    sana_repo: Path  # <root>/sana: text_encoder/ (Gemma2Model) + tokenizer/
    gemma_dir: Path  # <root>/gemma-2-tiny-it: Gemma2ForCausalLM (sharded, `model.` prefix, lm_head) + tokenizer
    hidden_size: int
    vocab_size: int


def build_tiny_gemma(directory: str | Path, tokenizer_dir: str | Path, vocab_size: int | None = None,
                     hidden_size: int = TINY_GEMMA_HIDDEN, *, seed: int = 0,
                     dtype: torch.dtype = torch.float32) -> TinyGemma:
    """Save one tiny random Gemma-2 in both layouts (same decoder weights), each with a copy of the tokenizer.

    ``vocab_size`` defaults to the tokenizer's size (it may be larger, as the real 256000-row embedding is).
    """
    directory = Path(directory)
    tokenizer = GemmaTokenizerFast.from_pretrained(tokenizer_dir)
    vocab_size = vocab_size or len(tokenizer)
    if vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's {len(tokenizer)}")
    config = tiny_gemma_config(vocab_size, hidden_size)
    gen = torch.Generator().manual_seed(seed)
    config.tie_word_embeddings = False  # the plain folder gets an lm_head the loader must ignore
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the initial weights too: the same model whatever ran before in the process
        lm = Gemma2ForCausalLM(config)
        for p in lm.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    lm = lm.to(dtype)

    sana = directory / "sana"
    decoder: Gemma2Model = lm.model
    decoder.save_pretrained(sana / "text_encoder")
    tokenizer.save_pretrained(sana / "tokenizer")

    gemma = directory / "gemma-2-tiny-it"
    lm.save_pretrained(gemma, max_shard_size="100KB")
    tokenizer.save_pretrained(gemma)
    return TinyGemma(sana_repo=sana, gemma_dir=gemma, hidden_size=hidden_size, vocab_size=vocab_size)
