"""Errors that point at the real cause: a LoRA file holding NaN/Inf is refused by file and key before any sampling;
a NaN/Inf during sampling hints at an fp16 overflow only when the model computes in fp16."""

import re

import pytest
import torch
from sana_comfy.sana_core import lora, pipeline
from sana_comfy.sana_core.errors import SanaError
from sana_comfy.sana_core.guidance import TextCond
from sana_comfy.sana_core.load.transformer import load_transformer
from sana_comfy.sana_core.sampling import FiniteCheck, flow_dpm_schedule, flow_dpm_solver, sample_flow_dpm
from support.lora import foreign_lora, peft_lora, save_layout
from support.models import TINY, save_layouts, tiny_diffusers_transformer

pytestmark = pytest.mark.unit

RANK = 4
BAD = {"nan": float("nan"), "inf": float("inf")}
FP16_HINT = "fp16 overflow — load the transformer in bf16 (or fp32)"
SPRINT = dict(qk_norm="rms_norm_across_heads", guidance_embeds=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora_errors")
    ref = tiny_diffusers_transformer()
    folders = {"flow": save_layouts(ref, tmp / "flow")["folder"],
               "sprint": save_layouts(tiny_diffusers_transformer(**SPRINT), tmp / "sprint")["folder"]}
    return folders, peft_lora(ref, rank=RANK, seed=1), tmp


def _broken(sd, kind, key="transformer.transformer_blocks.1.attn1.to_k.lora_B.weight"):
    """A copy of a PEFT dict with one value of ``key`` set to NaN or Inf."""
    out = {k: v.clone() for k, v in sd.items()}
    out[key][2, 1] = BAD[kind]
    return out


def _bad_keys(f):
    return [k for k, v in f.items() if not torch.isfinite(v).all()]


def _want(name, f, kind):
    """The error for a file ``name`` whose one non-finite tensor holds one NaN or Inf, named as the file names it."""
    (key,) = _bad_keys(f)
    what = {"nan": "1 NaN", "inf": "1 Inf"}[kind]
    return rf"LoRA {re.escape(name)} holds NaN/Inf .*{re.escape(key)}: {what} of its {f[key].numel()} values"


# --- LoRA files holding NaN/Inf ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["peft", "kohya"])
@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_a_nan_or_inf_lora_is_named_by_file_and_key(models, layout, kind):
    folders, sd, tmp = models
    ours = load_transformer(folders["flow"], "fp32")
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    path = save_layout(_broken(sd, kind), tmp / f"broken_{kind}_{layout}.safetensors", layout)
    f = lora.read(path)
    want = _want(path.name, f, kind)
    with pytest.raises(SanaError, match=want):
        lora.prepare(ours, f, "transformer", path.name)
    with pytest.raises(SanaError, match=want):
        lora.apply(ours, f, "transformer", 0.7, path.name)
    assert all(torch.equal(v, before[k]) for k, v in ours.state_dict().items())  # the base is untouched


def test_only_used_tensors_are_checked_and_the_first_are_named(models):
    """NaN in keys that name no layer is skipped (they are never applied); with several bad tensors the first three
    are named, then a count."""
    folders, sd, _ = models
    ours = load_transformer(folders["flow"], "fp32")
    stray = {k: torch.full_like(v, float("nan")) for k, v in foreign_lora("flux").items()}
    found = lora.prepare(ours, {**sd, **stray}, "transformer", "stray.safetensors")
    assert len(found.targets) == len(sd) // 2
    many = {k: v.clone() for k, v in sd.items()}
    keys = [k for k in many if k.endswith(".lora_A.weight")][:5]
    for k in keys:
        many[k][0, 0] = float("-inf")
    with pytest.raises(SanaError) as e:
        lora.prepare(ours, many, "transformer", "many.safetensors")
    msg = str(e.value)
    assert "LoRA many.safetensors" in msg and all(f"{k}: 1 Inf of its" in msg for k in keys[:3])
    assert keys[3] not in msg and "(and 2 more tensors)" in msg


def test_the_lora_loader_node_refuses_a_nan_file_before_sampling(models_dir, pipeline_nodes):
    """SanaLoraLoaderModelOnly (lora.read, then the host's add_lora → lora.prepare): the file and key, at load
    time."""
    from sana_comfy.nodes import NODES as N

    model, _, _ = pipeline_nodes
    (models_dir / "loras").mkdir(exist_ok=True)
    path = save_layout(_broken(peft_lora(model.module, rank=RANK, seed=2), "nan"),
                       models_dir / "loras" / "diverged_nan.safetensors", "kohya")
    with pytest.raises(SanaError, match=_want(path.name, lora.read(path), "nan")):
        N["SanaLoraLoaderModelOnly"].execute(model, path.name, 0.6)


# --- NaN/Inf while sampling: the hint follows the compute dtype ------------------------------------------------------

def _denoise(model, sampler):
    g = torch.Generator().manual_seed(0)
    pos = TextCond(torch.randn(1, 6, TINY["caption_channels"], generator=g), torch.ones(1, 6))
    opts = pipeline.SampleOptions(steps=2, cfg=1.0, sampler=sampler)
    return pipeline.denoise(model, pos, None, torch.zeros(1, 32, 4, 4), 0, opts)


def _nan_model(folders, sampler, dtype):
    model = load_transformer(folders["sprint" if sampler == "sprint" else "flow"], dtype)
    with torch.no_grad():
        model.proj_out.bias[0] = float("nan")  # as a NaN weight (or a NaN LoRA merged) would
    return model


@pytest.mark.parametrize("sampler", ["flow_dpm_solver", "flow_euler", "sprint"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_nan_without_fp16_has_no_fp16_hint(models, sampler, dtype):
    model = _nan_model(models[0], sampler, dtype)
    assert model.cfg.guidance_embeds == (sampler == "sprint")
    with pytest.raises(SanaError) as e:
        _denoise(model, "flow_dpm_solver" if sampler == "sprint" else sampler)
    msg = str(e.value)
    assert "the model produced NaN/Inf at step 1 of 2" in msg and f"it computes in {dtype}:" in msg
    assert "weights and any LoRA files" in msg
    assert "fp16" not in msg and "overflow" not in msg and "load" not in msg


@pytest.mark.parametrize("sampler", ["flow_dpm_solver", "flow_euler", "sprint"])
def test_nan_in_fp16_hints_at_the_overflow(models, sampler):
    model = _nan_model(models[0], sampler, "fp16")
    with pytest.raises(SanaError, match=rf"NaN/Inf at step 1 of 2.*computes in fp16.*{re.escape(FP16_HINT)}"):
        _denoise(model, "flow_dpm_solver" if sampler == "sprint" else sampler)


def test_the_samplers_take_the_dtype_and_an_unknown_one_names_both_causes():
    """The host's entry (``flow_dpm_solver``) and the loop sampler pass ``dtype`` on; without it (a caller that
    does not know) the message names both causes, asserting neither; the GPU path (``done``) keeps the dtype."""
    def bad(x, t):
        return torch.full_like(x, float("nan"))

    x, sched = torch.zeros(1, 32, 2, 2), flow_dpm_schedule(3, 3.0)
    msgs = {}
    for dtype in (torch.float16, torch.float32, None):
        with pytest.raises(SanaError) as e:
            flow_dpm_solver(lambda xi, i: bad(xi, None), x, sched.sigmas, dtype=dtype)
        msgs[dtype] = str(e.value)
        with pytest.raises(SanaError) as e2:
            sample_flow_dpm(bad, x, sched, dtype=dtype)
        assert str(e2.value) == msgs[dtype]
    assert FP16_HINT in msgs[torch.float16] and "fp16" not in msgs[torch.float32]
    assert "if the transformer computes in fp16" in msgs[None] and "LoRA files" in msgs[None]
    assert FP16_HINT not in msgs[None]
    check = FiniteCheck(4, torch.bfloat16)
    check._flags = [(0, torch.tensor(True)), (1, torch.tensor(False))]  # as a GPU run leaves them
    with pytest.raises(SanaError, match=r"step 2 of 4.*computes in bf16: check") as e:
        check.done()
    assert "fp16" not in str(e.value)


def test_decode_names_the_causes_without_asserting_fp16():
    bad = torch.zeros(1, 32, 2, 2)
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(SanaError) as e:
        pipeline.decode_images(None, bad)  # refused before the VAE is touched
    msg = str(e.value)
    assert msg.startswith("the latent to decode contains NaN/Inf values") and "LoRA" in msg
    assert "if the transformer computed in fp16" in msg and "often an fp16 overflow" not in msg
