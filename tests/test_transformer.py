"""The Sana transformer against diffusers' SanaTransformer2DModel on the same tiny random weights."""

import pytest
import torch
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.load.transformer import load_transformer
from support.models import VARIANTS, save_layouts, tiny_diffusers_transformer, transformer_inputs


@pytest.mark.parity
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("hw", [(6, 10), (8, 8)])
def test_forward_matches_diffusers(tmp_path, variant, hw):
    ref = tiny_diffusers_transformer(**VARIANTS[variant])
    paths = save_layouts(ref, tmp_path)
    ours = load_transformer(paths["folder"], "fp32")
    x, y, mask, t = transformer_inputs(h=hw[0], w=hw[1])
    kw = {}
    if variant == "guidance":
        kw["guidance"] = torch.tensor([0.45, 0.3])
    with torch.no_grad():
        want = ref(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t, return_dict=False, **kw)[0]
        got = ours(x, t, y, mask, **kw)
    assert got.shape == want.shape == x.shape
    assert want.abs().max() > 0.1  # the tiny model gives a real signal
    assert (got - want).abs().max().item() <= 1e-5


def _bf16_calls(ref, ours, x, y, mask, t):
    """(ours, diffusers) in bf16 on the same inputs; ``ref`` is cast to bf16 in place."""
    ref = ref.to(torch.bfloat16)
    with torch.no_grad():
        want = ref(x.bfloat16(), encoder_hidden_states=y.bfloat16(), encoder_attention_mask=mask, timestep=t,
                   return_dict=False)[0]
        return ours(x.bfloat16(), t, y.bfloat16(), mask), want


@pytest.mark.parity
def test_bf16_forward_close_to_diffusers(tmp_path):
    ref = tiny_diffusers_transformer()
    ours = load_transformer(save_layouts(ref, tmp_path)["folder"], "bf16")
    got, want = _bf16_calls(ref, ours, *transformer_inputs())
    assert got.dtype == torch.bfloat16
    assert (got.float() - want.float()).abs().max().item() <= 2e-2


@pytest.mark.unit
@pytest.mark.parametrize("layout", ["folder", "single_diffusers", "single_original", "pth"])
def test_every_layout_loads_the_same_weights(tmp_path, layout):
    ref = tiny_diffusers_transformer(qk_norm="rms_norm_across_heads")
    paths = save_layouts(ref, tmp_path)
    cfg = {k: v for k, v in ref.config.items() if not k.startswith("_")}
    ours = load_transformer(paths[layout], "fp32", config=None if layout == "folder" else cfg)
    want = ref.state_dict()
    got = ours.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.unit
def test_dtype_choice(tmp_path):
    ref = tiny_diffusers_transformer().to(torch.bfloat16)
    folder = save_layouts(ref, tmp_path)["folder"]
    assert load_transformer(folder).dtype == torch.bfloat16  # the file's own
    assert load_transformer(folder, "fp16").dtype == torch.float16
    assert load_transformer(folder, "fp32").dtype == torch.float32
    with pytest.raises(SanaError, match="weight dtype"):
        load_transformer(folder, "int4")


@pytest.mark.parity
@pytest.mark.parametrize("variant", ["base", "qk_norm"])
def test_gpu_forms_match_diffusers(tmp_path, variant):
    """The fused-layout forms (token-layout linear attention and Mix-FFN, fused modulation; the GPU's in every dtype,
    the CPU's in fp32): fp32 against diffusers and against our own plain forms, with and without PAG's identity
    chunk; bf16 (the GPU's forms, made to run here) within the bf16 tolerance."""
    from sana_comfy.sana_core import speed

    with speed.policy.forced(fused_blocks=True):
        _gpu_forms_match_diffusers(tmp_path, variant, speed)


def _gpu_forms_match_diffusers(tmp_path, variant, speed):
    ref = tiny_diffusers_transformer(**VARIANTS[variant])
    folder = save_layouts(ref, tmp_path)["folder"]
    ours = load_transformer(folder, "fp32")
    x, y, mask, t = transformer_inputs(batch=2, h=6, w=10)
    pag = dict(identity_blocks=frozenset({1}), n_identity=1)
    with torch.no_grad():
        want = ref(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t, return_dict=False)[0]
        got, got_pag = ours(x, t, y, mask), ours(x, t, y, mask, **pag)
        speed.apply(ours, False)
        plain, plain_pag = ours(x, t, y, mask), ours(x, t, y, mask, **pag)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)
    assert not torch.equal(got, plain)  # the other forms did run (their sums round differently)
    torch.testing.assert_close(got_pag, plain_pag, rtol=1e-5, atol=1e-5)
    assert (got_pag - got).abs().max() > 1e-3  # the identity chunk changed something

    got16, want16 = _bf16_calls(ref, load_transformer(folder, "bf16"), x, y, mask, t)
    assert got16.dtype == torch.bfloat16
    assert (got16.float() - want16.float()).abs().max().item() <= 2e-2


@pytest.mark.unit
@pytest.mark.parametrize("variant", ["base", "qk_norm"])
def test_held_caption_is_the_same_call(tmp_path, variant):
    """A caption passed again (as a sampler's loop passes it every step, ComfyUI in a fresh tensor each time) gives
    exactly the plain call's result; its cross-attention keys and values are computed on its second call and reused
    from then on, recomputed when the weights change, never kept under autograd; the last KEPT_CAPTIONS captions are
    kept."""
    from sana_comfy.sana_core import caches
    from sana_comfy.sana_core.speed.transformer import KEPT_CAPTIONS

    ref = tiny_diffusers_transformer(**VARIANTS[variant])
    ours = load_transformer(save_layouts(ref, tmp_path)["folder"], "fp32")
    x, y, mask, t = transformer_inputs()
    calls = []
    ours.transformer_blocks[0].attn2.to_k.register_forward_hook(lambda *a: calls.append(1))

    def plain(*args, **kw):  # the same call with nothing kept
        with torch.enable_grad():  # nothing is kept, or looked up, under autograd
            return ours(*args, **kw).detach()

    with torch.no_grad():
        for step in range(4):
            xs, ts = x * (1 + step), t - 100 * step
            assert torch.equal(ours(xs, ts, y.clone() if step % 2 else y, mask), plain(xs, ts, y, mask))
        assert torch.equal(ours(x, t, y, mask, identity_blocks={0}, n_identity=1),  # PAG's perturbed chunk
                           plain(x, t, y, mask, identity_blocks={0}, n_identity=1))
        assert len(calls) - 5 == 2  # y: on its first and second sighting only, whichever tensor carries it
        calls.clear()
        ours.transformer_blocks[0].attn2.to_v.weight.mul_(2)  # an edited weight: new keys and values
        assert torch.equal(ours(x, t, y, mask), plain(x, t, y, mask))
        y2 = y * 1.5  # another caption: remembered on first sight, kept from its second
        assert torch.equal(ours(x, t, y2, mask), plain(x, t, y2, mask))
        assert torch.equal(ours(x, t, y2, mask), plain(x, t, y2, mask))
        assert len(calls) - 3 == 3
        others = [y * (2 + i) for i in range(KEPT_CAPTIONS)]
        for o in others:  # KEPT_CAPTIONS other captions push y out
            ours(x, t, o, mask)
        seen = caches.peek(ours, "captions")
        assert not any(e.holds(y) for e in seen) and len(seen) == KEPT_CAPTIONS
    want = ref(x, encoder_hidden_states=y, encoder_attention_mask=mask, timestep=t, return_dict=False)[0]
    assert not torch.allclose(ours(x, t, y, mask), want, atol=1e-3)  # the edit did reach the result
    calls.clear()
    with torch.enable_grad():  # with autograd nothing is kept across calls
        ours(x, t, y, mask)
        ours(x, t, y, mask)
    assert len(calls) == 2
    ours.to(torch.float64)  # moved weights: nothing kept survives
    assert caches.peek(ours, "captions") is None


@pytest.mark.unit
def test_speed_forms_where_they_apply(monkeypatch):
    """The CPU forms run in fp32 on the CPU kinds where they were measured faster, nowhere else on a CPU (bf16 keeps
    diffusers' op order); ``forced`` overrides the table inside its block only. The switch swaps every module back
    to its reference class."""
    from sana_comfy.sana_core import layers, speed
    from sana_comfy.sana_core import transformer as tr

    p = speed.policy
    fp32, bf16 = torch.zeros(1), torch.zeros(1, dtype=torch.bfloat16)
    vendor, _, width = p.cpu_kind().partition(" ")  # this machine's: "<vendor> <avx512|avx2|other>", or its arch
    assert width in ("avx512", "avx2", "other") or not width, p.cpu_kind()
    for kind in ("GenuineIntel avx512", "AuthenticAMD avx2", "AuthenticAMD avx512", "GenuineIntel avx2", "aarch64"):
        monkeypatch.setattr(p, "cpu_kind", lambda kind=kind: kind)
        fast = kind in p.FAST_CPU_KINDS
        assert (p.fused_blocks(fp32), p.fast_convs(fp32)) == (fast, fast), kind
        assert not p.fused_blocks(bf16) and not p.fast_convs(bf16)
        with p.forced(fused_blocks=True, fast_convs=False):
            assert p.fused_blocks(bf16) and not p.fast_convs(fp32)
        assert (p.fused_blocks(fp32), p.fast_convs(fp32)) == (fast, fast), kind
    assert p.FAST_CPU_KINDS == {"GenuineIntel avx512", "AuthenticAMD avx2"}  # measured: README, "Benchmarks"
    assert not p.cuda_graphs(fp32)
    with pytest.raises(ValueError, match="cuda_graphs=True"):
        with p.forced(cuda_graphs=True):
            pass
    m = tr.SanaTransformer(tr.SanaConfig(num_layers=1, num_heads=2, head_dim=8, cross_heads=2, cross_head_dim=8),
                           device="meta")
    speed.apply(m, True)
    assert type(m).__name__ == "FastSanaTransformer" and type(m.transformer_blocks[0]).__name__ == "FastSanaBlock"
    speed.apply(m, False)
    assert {type(x).__module__ for x in m.modules()} <= {tr.__name__, layers.__name__, "torch.nn.modules.linear",
                                                         "torch.nn.modules.conv", "torch.nn.modules.container"}


@pytest.mark.unit
def test_kept_keys_and_values_reach_reference_blocks(tmp_path):
    """The caption's kept keys and values reach the blocks through the reference's declared ``caption`` seam: a
    model whose trunk keeps them and whose blocks are partly the reference's gives the plain call's result."""
    from sana_comfy.sana_core import caches, speed
    from sana_comfy.sana_core.transformer import CrossAttention, SanaBlock

    ours = speed.apply(load_transformer(save_layouts(tiny_diffusers_transformer(), tmp_path)["folder"], "fp32"), True)
    x, y, mask, t = transformer_inputs()
    with torch.no_grad():
        want = ours(x, t, y, mask)
        for block in ours.transformer_blocks[::2]:  # reference blocks, with reference cross-attention
            block.__class__, block.attn2.__class__ = SanaBlock, CrossAttention
        for _ in range(3):
            got = ours(x, t, y.clone(), mask)
    assert caches.peek(ours, "captions")[0].value is not None  # the last calls used kept keys and values
    with torch.no_grad():
        speed.apply(ours, False)
        plain = ours(x, t, y, mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)
