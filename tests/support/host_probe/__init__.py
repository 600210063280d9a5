"""A test-only ComfyUI custom node, linked into the real-host tests' custom_nodes: CONDITIONING shaped as another
text encoder makes it (CLIP-L: 77 tokens, 768 wide), for the tests of mixed conditioning lists."""

import torch


class SanaTestForeignConditioning:
    CATEGORY = "testing"
    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "make"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 768, "min": 1, "max": 4096})}}

    def make(self, width):
        return ([[torch.randn(1, 77, width), {"pooled_output": torch.zeros(1, width)}]],)


NODE_CLASS_MAPPINGS = {"SanaTestForeignConditioning": SanaTestForeignConditioning}
