"""sana_core.text_encoder against diffusers' SanaPipeline.encode_prompt on the same tiny Gemma-2 (docs/model.md §3, §9.14).

References come from a pipeline that was saved with save_pretrained and reloaded, because that is what users load
(the tokenizer's class and settings change on the round trip).
"""

from __future__ import annotations

import inspect
import json
import logging
import shutil

import pytest
import torch
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.load.text_encoder import load_text_encoder
from sana_comfy.sana_core.text_encoder import DEFAULT_CHI, SanaTextEncoder
from support.text import _CHI, SAMPLE_PROMPTS, TINY_GEMMA_HIDDEN, build_tiny_gemma

LOGGER = SanaTextEncoder.__module__  # the name the package was imported under
# Unequal lengths, mixed case, one past the 299-token window (its truncation must match too).
PROMPTS = ["A Red Fox in the snow, golden hour", "", "  a cat  ", SAMPLE_PROMPTS[3], "a red fox " * 120]


@pytest.fixture(scope="module")
def pipe_dir(tiny_gemma, tmp_path_factory):
    from diffusers import SanaPipeline
    from transformers import Gemma2Model, GemmaTokenizerFast

    pipe = SanaPipeline(tokenizer=GemmaTokenizerFast.from_pretrained(tiny_gemma.sana_repo / "tokenizer"),
                        text_encoder=Gemma2Model.from_pretrained(tiny_gemma.sana_repo / "text_encoder"),
                        vae=None, transformer=None, scheduler=None)
    out = tmp_path_factory.mktemp("pipe") / "sana"
    pipe.save_pretrained(out)
    return out


def _reload(pipe_dir, dtype=torch.float32):
    from diffusers import SanaPipeline

    return SanaPipeline.from_pretrained(pipe_dir, vae=None, transformer=None, scheduler=None, torch_dtype=dtype)


@pytest.fixture(scope="module")
def ref_pipe(pipe_dir):
    return _reload(pipe_dir)


@pytest.fixture(scope="module")
def enc(pipe_dir) -> SanaTextEncoder:
    return load_text_encoder(pipe_dir)


def _same(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-6) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    diff = (a.float() - b.float()).abs().max().item()
    assert diff <= tol, f"max abs diff {diff}"


@pytest.mark.parity
def test_default_chi_is_diffusers_default():
    from diffusers import SanaPipeline

    ref = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
    assert DEFAULT_CHI == ref
    assert "'Enhanced prompt'" in DEFAULT_CHI[0] and DEFAULT_CHI[-1] == "User Prompt: "
    assert _CHI == DEFAULT_CHI  # the tokenizer fixture was trained on the real text


@pytest.mark.unit
def test_fixture_tokenizer_merges_like_gemma(enc):
    # docs/model.md §3.3: encode(CHI) ends in a lone "▁" that merges into the first prompt word, so the kept window
    # (from index N_chi - 1) starts at the prompt. The tiny tokenizer must reproduce that for the parity to mean much.
    tok = enc.tokenizer
    chi_ids = tok.encode("\n".join(DEFAULT_CHI))
    assert chi_ids[0] == tok.bos_token_id == 2 and tok.pad_token_id == 0
    assert tok.convert_ids_to_tokens(chi_ids[-1]) == "▁"
    joint = tok.convert_ids_to_tokens(tok.encode("\n".join(DEFAULT_CHI) + "a red fox"))
    assert joint[len(chi_ids) - 1:] == ["▁a", "▁red", "▁fox"]
    assert tok.encode("") == [2] and tok.eos_token_id not in tok.encode("a cat")


@pytest.mark.parity
def test_reference_uses_eager_attention(ref_pipe, enc):
    assert ref_pipe.text_encoder.config._attn_implementation == "eager"
    assert enc.model.config._attn_implementation == "eager"


@pytest.mark.parity
def test_parity_chi_on_with_negative(ref_pipe, enc):
    negative = "Blurry, Low quality"
    pe, pm, ne, nm = ref_pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=True, negative_prompt=negative,
                                            device="cpu", complex_human_instruction=DEFAULT_CHI)
    e, m = enc.encode(PROMPTS, lowercase=True)
    _same(e, pe)
    assert m.dtype == torch.int64 and torch.equal(m, pm)
    assert e.shape == (len(PROMPTS), 300, TINY_GEMMA_HIDDEN)
    assert len(set(m.sum(1).tolist())) > 1  # every prompt keeps its own mask
    assert m[-1].all()  # the long prompt fills the window

    en, mn = enc.encode_negative([negative] * len(PROMPTS), lowercase=True)
    _same(en, ne)
    assert torch.equal(mn, nm)


@pytest.mark.parity
def test_parity_chi_off(ref_pipe, enc):
    pe, pm, _, _ = ref_pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False, device="cpu",
                                          complex_human_instruction=None)
    for chi in (None, "", []):
        e, m = enc.encode(PROMPTS, chi=chi, lowercase=True)
        _same(e, pe)
        assert torch.equal(m, pm)


@pytest.mark.parity
def test_parity_empty_negative(ref_pipe, enc):
    _, _, ne, nm = ref_pipe.encode_prompt(["a cat", "a dog"], negative_prompt="", device="cpu",
                                          complex_human_instruction=DEFAULT_CHI)
    en, mn = enc.encode_negative(["", ""], lowercase=True)
    _same(en, ne)
    assert torch.equal(mn, nm)
    assert mn.sum(1).tolist() == [1, 1]  # only the BOS is valid


@pytest.mark.parity
def test_parity_bf16(pipe_dir, enc):
    ref = _reload(pipe_dir, torch.bfloat16)
    ours = load_text_encoder(pipe_dir, dtype=torch.bfloat16)
    assert ours.dtype == torch.bfloat16
    pe, pm, ne, nm = ref.encode_prompt(PROMPTS[:3], device="cpu", complex_human_instruction=DEFAULT_CHI)
    e, m = ours.encode(PROMPTS[:3], lowercase=True)
    _same(e, pe, tol=0.0)
    assert torch.equal(m, pm)


# Messy captions as scraped: URLs, HTML and entities, hashtags and handles, dates and ids, full-width and CJK text,
# emoji, repeated punctuation, boilerplate, encoded text.
MESSY = [
    "A photo of a Cat https://example.com/cat.jpg — visit www.cats.org/page NOW",
    "<p>Hello <b>World</b> &amp; friends &quot;quoted&quot; &lt;tag&gt;</p>",
    "#sunset #beach @john_doe at the shore #12345 #1 tagged",
    "Photo taken 2023-05-12, id 1234567, IP 192.168.0.1 article 3:45  ",
    "ＦＵＬＬ　ｗｉｄｔｈ text 東京タワー の夜景 한국어 ㈱",
    "emoji 🐱🔥 and repeated punctuation!!! ??? ... *** ~~~ (((wow)))",
    "this-is-my-cute-cat_and_more",
    "FREE SHIPPING worldwide! Click for details. Download free png images page 3 1920x1080 jc6640 jc6640vc",
    "«Guillemets» ‘single’ “double” — em-dash – en-dash",
    "'\"a quoted whole caption\"'",
    "Café%20encoded+plus mojibake Ã©",
    "file image.png and photo.JPEG and doc.pdf",
    "\\n literal backslash n, commas,no space.next",
]


@pytest.mark.parity
def test_clean_caption_strings_equal_diffusers(ref_pipe):
    from sana_comfy.sana_core.captions import clean

    want = ref_pipe._text_preprocessing(MESSY, clean_caption=True)
    assert [clean(c) for c in MESSY] == want
    assert want[0] == "a photo of a cat - visit now" and want[1] == 'hello world friends "quoted"'


@pytest.mark.parity
def test_clean_caption_embeddings_equal_diffusers(ref_pipe, enc):
    """diffusers' encode_prompt(clean_caption=True) on the prompts and the negative, with and without the CHI."""
    negative = "<b>Blurry</b>, LOW quality, watermark www.stock.com"
    for chi in (DEFAULT_CHI, None):
        pe, pm, ne, nm = ref_pipe.encode_prompt(MESSY, do_classifier_free_guidance=True, negative_prompt=negative,
                                                device="cpu", clean_caption=True, complex_human_instruction=chi)
        e, m = enc.encode(MESSY, chi=chi, clean_caption=True)
        _same(e, pe, tol=1e-4)
        assert torch.equal(m, pm)
        en, mn = enc.encode_negative([negative] * len(MESSY), clean_caption=True)
        _same(en, ne, tol=1e-4)
        assert torch.equal(mn, nm)
    plain, _ = enc.encode(MESSY[:1])
    cleaned, _ = enc.encode(MESSY[:1], clean_caption=True)
    assert (plain - cleaned).abs().max() > 1e-2  # the option changes the embedding


@pytest.mark.unit
def test_clean_caption_without_its_packages_stops_with_the_fix(enc, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "bs4", None)  # as if beautifulsoup4 were not installed
    with pytest.raises(SanaError, match=r"clean_caption needs the optional package 'bs4'.*pip install "
                                        r"beautifulsoup4 ftfy"):
        enc.encode(["a cat"], clean_caption=True)
    enc.encode(["a cat"])  # off: not needed


@pytest.mark.unit
def test_keeps_case_by_default(enc):
    cap, lower = "A Red Fox", "a red fox"
    assert enc.tokenizer.encode(cap) != enc.tokenizer.encode(lower)
    e_cap, _ = enc.encode([cap])
    e_low, _ = enc.encode([lower])
    e_cap_lowered, _ = enc.encode([cap], lowercase=True)
    assert not torch.equal(e_cap, e_low)
    assert torch.equal(e_cap_lowered, e_low)
    assert torch.equal(enc.encode(["  a cat \n"])[0], enc.encode(["a cat"])[0])  # stripped


@pytest.mark.unit
def test_layouts_give_identical_outputs(tiny_gemma, pipe_dir, enc):
    e0, m0 = enc.encode(PROMPTS[:3])
    for path in (tiny_gemma.sana_repo, tiny_gemma.gemma_dir):  # fixture repo; Gemma2ForCausalLM, sharded, model. + lm_head
        other = load_text_encoder(path)
        assert other.hidden_size == TINY_GEMMA_HIDDEN and other.dtype == torch.float32
        e, m = other.encode(PROMPTS[:3])
        assert torch.equal(e, e0) and torch.equal(m, m0)
    assert json.loads((tiny_gemma.gemma_dir / "model.safetensors.index.json").read_text())["weight_map"]["lm_head.weight"]


@pytest.mark.unit
def test_dtype_rules(tiny_gemma, tmp_path):
    with pytest.raises(SanaError, match="fp16|float16"):
        load_text_encoder(tiny_gemma.sana_repo, dtype=torch.float16)
    with pytest.raises(SanaError, match="float64"):
        load_text_encoder(tiny_gemma.sana_repo, dtype=torch.float64)
    bf = build_tiny_gemma(tmp_path / "bf16", tiny_gemma.sana_repo / "tokenizer", dtype=torch.bfloat16)
    assert load_text_encoder(bf.sana_repo).dtype == torch.bfloat16  # None → the file's bf16
    assert load_text_encoder(bf.gemma_dir, dtype=torch.float32).dtype == torch.float32
    assert load_text_encoder(tiny_gemma.sana_repo).dtype == torch.float32  # fp32 file → fp32


@pytest.mark.unit
def test_properties_and_to(enc):
    assert enc.hidden_size == TINY_GEMMA_HIDDEN
    assert enc.device == torch.device("cpu")
    assert enc.to("cpu") is enc
    with pytest.raises(SanaError):
        enc.to(torch.float16)


@pytest.mark.unit
def test_edge_prompts_encode(enc, caplog):
    edge = ["", "日本語のテキスト、中文提示词", "a cat 🐱🚀 with emoji 👍🏽", "שלום עולם مرحبا بالعالم",
            "nul\x00 and control \x01\x02\x1b[31m\x7f chars\t\r\n end", "\u200b\u200e\ufeff"]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for chi in (DEFAULT_CHI, None):
            e, m = enc.encode(edge, chi=chi)
            assert e.shape == (len(edge), 300, TINY_GEMMA_HIDDEN) and torch.isfinite(e).all()
            assert (m[:, 0] == 1).all()
            en, _ = enc.encode_negative(edge)
            assert torch.isfinite(en).all()
    assert not [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.mark.unit
def test_long_prompt_truncated_with_one_log_line(enc, caplog):
    long = "a red fox in the snow " * 910  # 20,020 characters
    assert len(long) >= 20_000
    tok = enc.tokenizer
    chi = "\n".join(DEFAULT_CHI)
    window = len(tok.encode(chi)) + 300 - 2
    expected_dropped = len(tok.encode(chi + long.strip())) - window
    assert expected_dropped > 1000
    with caplog.at_level(logging.INFO, logger=LOGGER):
        e, m = enc.encode([long])
    records = [r for r in caplog.records if r.name == LOGGER]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert f"{expected_dropped} tokens dropped" in records[0].getMessage()
    assert e.shape == (1, 300, TINY_GEMMA_HIDDEN) and m.all()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        e, m = enc.encode([long, "a cat", long], chi=None)
    assert len([r for r in caplog.records if r.name == LOGGER]) == 1
    assert m.sum(1).tolist()[0] == 300 and m.sum(1).tolist()[1] < 300


@pytest.mark.unit
def test_bad_inputs(enc):
    for bad in ([], [None], 3):
        with pytest.raises(SanaError):
            enc.encode(bad)
    with pytest.raises(SanaError, match="max_length"):
        enc.encode(["a"], max_length=0)
    with pytest.raises(SanaError, match="chi"):
        enc.encode(["a"], chi=5)


@pytest.mark.unit
def test_missing_tokenizer_files(tiny_gemma, tmp_path):
    folder = tmp_path / "gemma-no-tok"
    shutil.copytree(tiny_gemma.gemma_dir, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    with pytest.raises(SanaError, match="no tokenizer files") as err:
        load_text_encoder(folder)
    assert str(folder) in str(err.value)

    repo = tmp_path / "sana-no-tok"
    shutil.copytree(tiny_gemma.sana_repo, repo)
    shutil.rmtree(repo / "tokenizer")
    with pytest.raises(SanaError, match="tokenizer/") as err:
        load_text_encoder(repo)
    assert str(repo) in str(err.value)


@pytest.mark.unit
def test_missing_or_wrong_config(tiny_gemma, tmp_path):
    folder = tmp_path / "no-config"
    shutil.copytree(tiny_gemma.gemma_dir, folder)
    (folder / "config.json").unlink()
    with pytest.raises(SanaError, match="no config.json") as err:
        load_text_encoder(folder)
    assert str(folder) in str(err.value)

    for model_type, arch in (("t5", "T5EncoderModel"), ("clip_text_model", "CLIPTextModel"), ("gemma", "GemmaModel")):
        (folder / "config.json").write_text(json.dumps({"model_type": model_type, "architectures": [arch]}))
        with pytest.raises(SanaError, match=f"model_type '{model_type}'.*expected 'gemma2'") as err:
            load_text_encoder(folder)
        assert str(folder / "config.json") in str(err.value)

    with pytest.raises(SanaError, match="not found"):
        load_text_encoder(tmp_path / "nowhere")


@pytest.mark.unit
def test_loading_is_strict(tiny_gemma, tmp_path):
    from safetensors.torch import load_file, save_file

    repo = tmp_path / "sana-partial"
    shutil.copytree(tiny_gemma.sana_repo, repo)
    f = repo / "text_encoder" / "model.safetensors"
    sd = load_file(f)
    sd.pop("layers.1.mlp.up_proj.weight")
    save_file(sd, f)
    with pytest.raises(SanaError, match="1 missing"):
        load_text_encoder(repo)


@pytest.mark.unit
def test_diffusers_variant_file_is_found(tiny_gemma, tmp_path, enc):
    # Hub Sana repos ship the text encoder as a bf16 variant (model.bf16*.safetensors).
    repo = tmp_path / "sana-variant"
    shutil.copytree(tiny_gemma.sana_repo, repo)
    (repo / "text_encoder" / "model.safetensors").rename(repo / "text_encoder" / "model.bf16.safetensors")
    e, m = load_text_encoder(repo).encode(["a cat"])
    e0, m0 = enc.encode(["a cat"])
    assert torch.equal(e, e0) and torch.equal(m, m0)
