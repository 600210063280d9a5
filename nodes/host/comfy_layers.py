"""The layer classes the pack builds its models from inside ComfyUI (``operations``, ``sana_core/layers.py``): the
host's own ``comfy.ops`` Linear and Conv2d, and Sana's RMSNorm and 8-bit layers made castable in the same way. The
host's model management can then keep any layer's weights off the compute device and cast them per call (partial
loading when memory is short, --lowvram, --novram) and apply LoRA patches per call to the layers it did not load.
While nothing is cast, each layer runs the reference forward. Imported only inside ComfyUI.

Hosts differ in how they patch and cast; each layer detects what it is given rather than a host version:
- per-call patches come in ``weight_function`` (a ``LowVramPatch`` that may or may not call the layer's
  ``convert_weight`` / ``set_weight``) or, from a dynamic-VRAM patcher, in ``weight_lowvram_function``: an 8-bit
  layer dequantizes first and has each patch only add its deltas;
- a patcher may hand ``convert_weight`` the 8-bit values still in 8 bits, or cast to its LoRA compute dtype;
- a host whose Linear creates no weight in ``__init__`` (lazy loading under ``comfy_aimdo``) creates it for a class
  with its own state-dict loader, which ``Linear`` and ``Conv2d`` have."""

from __future__ import annotations

import copy

import comfy.model_management as mm
import comfy.ops
import torch
import torch.nn.functional as F

from ...sana_core import layers, quant


class _PerCall(comfy.ops.CastWeightBiasOp):
    """The host's casting flags, read as the one flag the pack's speed forms check."""

    @property
    def casts_per_call(self) -> bool:
        return bool(self.comfy_cast_weights or self.weight_function or self.bias_function)


class _HostLayer(_PerCall):
    """A host layer filled by torch's own state-dict loading, so that it has its weight from ``__init__``: the
    loaders build on the meta device and compare the model's state dict with the file before loading
    (``load.tensors.load_into``)."""

    _load_from_state_dict = torch.nn.Module._load_from_state_dict


class Linear(_HostLayer, comfy.ops.disable_weight_init.Linear):
    pass


class Conv2d(_HostLayer, comfy.ops.disable_weight_init.Conv2d):
    pass


class RMSNorm(_PerCall, layers.RMSNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        comfy.ops.run_every_op()
        if not self.casts_per_call:
            return super().forward(x)
        weight, bias, stream = comfy.ops.cast_bias_weight(self, x, dtype=self.weight.dtype, offloadable=True)
        out = layers.rms_norm(x, weight, bias, self.eps)
        comfy.ops.uncast_bias_weight(self, weight, bias, stream)
        return out


def _per_call(layer, name: str) -> list:
    """The host's per-call patches of ``layer.<name>``, in the order it applies them: a dynamic-VRAM patcher's
    ``<name>_lowvram_function`` (a LoRA), then ``<name>_function`` (another patcher's LoRA; weight wrappers)."""
    lowvram = getattr(layer, name + "_lowvram_function", None)
    return ([] if lowvram is None else [lowvram]) + list(getattr(layer, name + "_function"))


def _adds_only(patch):
    """A per-call patch that only adds its deltas to the weight it is given: a host ``LowVramPatch`` holding the
    layer's ``convert_func`` / ``set_func`` may call them (scaling a dequantized weight a second time); its copy
    without them does not."""
    if getattr(patch, "convert_func", None) is None and getattr(patch, "set_func", None) is None:
        return patch
    patch = copy.copy(patch)
    patch.convert_func = patch.set_func = None
    return patch


class _Quant(_PerCall):
    """An 8-bit layer whose stored weight, row scales and bias may live off the compute device: the 8-bit weight is
    moved, then widened and scaled there (and patched, when the host patches it per call)."""

    def convert_weight(self, w: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """The float weight of ``w``, this layer's 8-bit values as a host passes them: still in 8 bits (widened to
        the compute dtype here) or cast to the host's float dtype (scaled in that dtype)."""
        if w.element_size() == 1:
            w, inplace = w.to(self.compute_dtype), True
        return super().convert_weight(w, inplace=inplace)

    def weights_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight, bias) on ``device`` in the compute dtype, with the host's per-call patches, each added to the
        dequantized weight in fp32 (as the host patches the weights it loads)."""
        patched = self._buffers.get("weight_patched")
        patches = _per_call(self, "weight")
        if patched is not None and self._patched_from is self.weight:
            w = patched.to(device, non_blocking=True)
        elif patches:
            w = self.convert_weight(self.weight.to(device, non_blocking=True).float(), inplace=True)
            for f in patches:
                w = _adds_only(f)(w)
            w = w.to(self.compute_dtype)
        else:
            w = self.convert_weight(self.weight.to(device, non_blocking=True).to(self.compute_dtype), inplace=True)
        b = None if self.bias is None else self.bias.to(device, non_blocking=True)
        if b is not None:
            for f in _per_call(self, "bias"):
                b = f(b)
        return w, b


class QuantLinear(_Quant, quant.QuantLinear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        comfy.ops.run_every_op()
        if not self.casts_per_call:
            return super().forward(x)
        return F.linear(x, *self.weights_on(x.device))


class QuantConv2d(_Quant, quant.QuantConv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        comfy.ops.run_every_op()
        if not self.casts_per_call:
            return super().forward(x)
        w, b = self.weights_on(x.device)
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)


class Operations(layers.Operations):
    """What the pack's loaders build from inside ComfyUI."""
    Linear = Linear
    Conv2d = Conv2d
    RMSNorm = RMSNorm
    QuantLinear = QuantLinear
    QuantConv2d = QuantConv2d


def load(handle, memory_required: int = 0) -> torch.nn.Module:
    """The module behind a handle, loaded through the host's model management (evicting others as needed). A model
    built from these layers may be loaded in part when memory is short, the rest cast per call; it then computes on
    the load device whatever device its first weights are on (``compute_device``). Others (Gemma-2) load whole."""
    module = handle.model.inner
    partly = getattr(module, "operations", None) is Operations
    mm.load_models_gpu([handle], memory_required=memory_required, force_full_load=not partly)
    if partly:
        module.compute_device = handle.load_device
    return module
