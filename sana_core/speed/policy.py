"""Which speed forms run where: the one place that decides, per device, dtype and CPU kind (docs/architecture.md).

Every faster form in this package computes the reference model's function; some round differently (fused sums,
Winograd transforms), so each runs only where the benchmarks measured it faster than the reference form, and is
checked against the reference by the tests:

| form | runs on |
|---|---|
| fused-layout transformer blocks (``speed/transformer.py``) | CUDA in every dtype; the CPU in fp32 on ``FAST_CPU_KINDS`` |
| DC-AE convolution forms, channels-last (``speed/dcae.py``, ``conv.py``) | the CPU in fp32, fp64 on ``FAST_CPU_KINDS`` |
| CUDA-graph replay (``speed/cudagraph.py``) | CUDA, without autograd, outside another capture |
| the caption's keys and values kept across sampling steps | everywhere, without autograd (bit-identical) |

A CPU kind is its vendor and its widest vector instructions ("GenuineIntel avx512", "AuthenticAMD avx2"). The CPU
forms lean on the matmul and convolution kernels of the CPU they run on; where they were measured slower than the
reference (the fused blocks on AMD with AVX-512), or not measured, the reference forms run. The README's benchmark
section lists the machines and their figures. bf16 on the CPU keeps
diffusers' op order. The switch that turns all of it off is ``speed.apply(module, False)``, or ``SANA_SPEED=0`` in
the environment before loading.
"""

from __future__ import annotations

import functools
import os
import platform
from collections.abc import Iterator
from contextlib import contextmanager

import torch

SWITCH = "SANA_SPEED"
FUSED_CPU_DTYPES = {torch.float32}  # the CPU dtypes where the transformer's fused forms run (CUDA: every dtype)
FAST_CONV_CPU_DTYPES = {torch.float32, torch.float64}
FAST_CPU_KINDS = {"GenuineIntel avx512", "AuthenticAMD avx2"}  # where the benchmarks measured the CPU forms faster
_FORCED: dict[str, bool] = {}  # form → runs wherever it can (True) or nowhere (False), inside ``forced``


def enabled(on: bool | None = None) -> bool:
    """The switch: an explicit ``on`` wins; otherwise the environment (on unless ``SANA_SPEED=0``)."""
    return os.environ.get(SWITCH, "1") != "0" if on is None else bool(on)


@contextmanager
def forced(**forms: bool) -> Iterator[None]:
    """Inside the block, each named form runs on every device and dtype (True) or nowhere (False), whatever the
    table says: for tests and benchmarks that compare the forms on one machine. Forms: ``fused_blocks``,
    ``fast_convs``, and ``cuda_graphs`` (False only: a graph needs CUDA)."""
    unknown = set(forms) - {"fused_blocks", "fast_convs", "cuda_graphs"}
    if unknown or forms.get("cuda_graphs"):
        raise ValueError(f"policy.forced: {sorted(unknown) or 'cuda_graphs=True'} is not a form that can be forced")
    before = dict(_FORCED)
    _FORCED.update(forms)
    try:
        yield
    finally:
        _FORCED.clear()
        _FORCED.update(before)


@functools.cache
def cpu_kind() -> str:
    """This machine's CPU vendor and widest vector instructions ("GenuineIntel avx512", "AuthenticAMD avx2", …), or
    its architecture where the kernel does not say."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if "vendor_id" in fields and "flags" in fields:
                    break
    except OSError:
        pass
    if "vendor_id" not in fields:
        return platform.machine() or "unknown"
    flags = set(fields.get("flags", "").split())
    width = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"
    return f"{fields['vendor_id']} {width}"


def fused_blocks(x: torch.Tensor) -> bool:
    forced_to = _FORCED.get("fused_blocks")
    if forced_to is not None:
        return forced_to
    if x.device.type == "cuda":
        return True
    return x.device.type == "cpu" and x.dtype in FUSED_CPU_DTYPES and cpu_kind() in FAST_CPU_KINDS


def fast_convs(x: torch.Tensor) -> bool:
    forced_to = _FORCED.get("fast_convs")
    if forced_to is not None:
        return forced_to
    return x.device.type == "cpu" and x.dtype in FAST_CONV_CPU_DTYPES and cpu_kind() in FAST_CPU_KINDS


def cuda_graphs(x: torch.Tensor) -> bool:
    return _FORCED.get("cuda_graphs", True) and x.is_cuda and not torch.is_grad_enabled() \
        and not torch.cuda.is_current_stream_capturing()


def keep_across_calls() -> bool:
    """Values derived from inputs may be kept from one call to the next only without autograd (else they would join
    every later step's graph)."""
    return not torch.is_grad_enabled()
