"""The layer classes the pack builds its models from inside ComfyUI (``operations``, ``sana_core/layers.py``): the
host's own ``comfy.ops`` Linear and Conv2d, and Sana's RMSNorm and 8-bit layers made castable in the same way. The
host's model management can then keep any layer's weights off the compute device and cast them per call (partial
loading when memory is short, --lowvram, --novram) and apply LoRA patches per call to the layers it did not load.
While nothing is cast, each layer runs the reference forward. Imported only inside ComfyUI."""

from __future__ import annotations

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


class Linear(_PerCall, comfy.ops.disable_weight_init.Linear):
    pass


class Conv2d(_PerCall, comfy.ops.disable_weight_init.Conv2d):
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


class _Quant(_PerCall):
    """An 8-bit layer whose stored weight, row scales and bias may live off the compute device: the 8-bit weight is
    moved, then widened and scaled there (and patched, when the host patches it per call)."""

    def weights_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        patched = self._buffers.get("weight_patched")
        if patched is not None and self._patched_from is self.weight:
            w = patched.to(device, non_blocking=True)
        elif self.weight_function:  # the host's per-call patches scale the weight themselves (convert_weight); in
            w = self.weight.to(device, non_blocking=True).float()  # fp32, as the host patches the weights it loads
            for f in self.weight_function:
                w = f(w)
            w = w.to(self.compute_dtype)
        else:
            w = self.convert_weight(self.weight.to(device, non_blocking=True).to(self.compute_dtype), inplace=True)
        b = None if self.bias is None else self.bias.to(device, non_blocking=True)
        for f in self.bias_function:
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
