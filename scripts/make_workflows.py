"""Writes the example workflows: UI format in example_workflows/ (ComfyUI lists them as templates) and their
API-format twins in example_workflows/api/ (what headless tests and scripts queue). One description, two formats,
so the twins cannot drift. Run: python scripts/make_workflows.py [--check]"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "example_workflows"

MODEL = "Sana_600M_1024px_diffusers"
GEMMA = "gemma-2-2b-it"
DCAE = "dc-ae-f32c32-sana-1.1-diffusers"
LORAS = ("sana_lora_style.safetensors", "sana_lora_detail.safetensors")  # put your own LoRA files' names here
CONTROLNET = "Sana_600M_1024px_ControlNet_HED_diffusers"
PROMPT = "a cyberpunk cat with a neon sign that says \"Sana\""
NEG = ""

# Widget order per node type (input names, in INPUT_TYPES order; a seed with control_after_generate adds a slot).
WIDGETS = {
    "SanaLoadTransformer": ["model_name", "weight_dtype"],
    "SanaLoadTextEncoder": ["text_encoder", "dtype"],
    "SanaLoadDCAE": ["vae_name", "dtype"],
    "SanaLoadPipeline": ["pipeline", "weight_dtype"],
    "SanaEncodePrompt": ["text", "use_chi", "max_length", "chi"],
    "SanaEmptyLatent": ["width", "height", "batch_size", "resolution_binning"],
    "SanaSample": ["seed", "steps", "cfg", "sampler", "flow_shift", "pag_scale", "pag_adaptive_scale", "pag_layers",
                   "denoise"],
    "SanaDecode": ["tiling"],
    "SanaEncodeImage": [],
    "SaveImage": ["filename_prefix"],
    "LoadImage": ["image", "upload"],
    "GrowMask": ["expand", "tapered_corners"],
    "ImagePadForOutpaint": ["left", "top", "right", "bottom", "feathering"],
    "SetLatentNoiseMask": [],
    "SanaLoraLoader": ["lora_name", "strength_model", "strength_text_encoder"],
    "SanaLoraLoaderModelOnly": ["lora_name", "strength_model"],
    "SanaLoadControlNet": ["control_net_name"],
    "SanaToVAE": [],
    "Canny": ["low_threshold", "high_threshold"],
    "ControlNetApplyAdvanced": ["strength", "start_percent", "end_percent"],
}
OUTPUTS = {
    "SanaLoadTransformer": ["SANA_MODEL"], "SanaLoadTextEncoder": ["SANA_TEXT_ENCODER"], "SanaLoadDCAE": ["SANA_VAE"],
    "SanaLoadPipeline": ["SANA_MODEL", "SANA_TEXT_ENCODER", "SANA_VAE"], "SanaEncodePrompt": ["CONDITIONING"],
    "SanaEmptyLatent": ["LATENT"], "SanaSample": ["LATENT"], "SanaDecode": ["IMAGE"], "SanaEncodeImage": ["LATENT"],
    "SaveImage": [], "LoadImage": ["IMAGE", "MASK"], "GrowMask": ["MASK"], "ImagePadForOutpaint": ["IMAGE", "MASK"],
    "SetLatentNoiseMask": ["LATENT"], "SanaLoraLoader": ["SANA_MODEL", "SANA_TEXT_ENCODER"],
    "SanaLoraLoaderModelOnly": ["SANA_MODEL"], "SanaLoadControlNet": ["CONTROL_NET"], "SanaToVAE": ["VAE"],
    "Canny": ["IMAGE"], "ControlNetApplyAdvanced": ["CONDITIONING", "CONDITIONING"],
}



def sample(seed=42, steps=20, cfg=4.5, pag_scale=0.0, denoise=1.0, sampler="flow_dpm_solver"):
    return dict(seed=seed, steps=steps, cfg=cfg, sampler=sampler, flow_shift=0.0, pag_scale=pag_scale,
                pag_adaptive_scale=0.0, pag_layers="8", denoise=denoise)


def loaders():
    return {
        "1": ("SanaLoadTransformer", dict(model_name=MODEL, weight_dtype="auto"), {}),
        "2": ("SanaLoadTextEncoder", dict(text_encoder=GEMMA, dtype="auto"), {}),
        "3": ("SanaLoadDCAE", dict(vae_name=DCAE, dtype="auto"), {}),
    }


def prompts(te=("2", 0)):
    return {
        "4": ("SanaEncodePrompt", dict(text=PROMPT, use_chi=True, max_length=300, chi=""), {"text_encoder": te}),
        "5": ("SanaEncodePrompt", dict(text=NEG, use_chi=False, max_length=300, chi=""), {"text_encoder": te}),
    }


def t2i(pag_scale=0.0, prefix="sana/t2i"):
    return {**loaders(), **prompts(),
            "6": ("SanaEmptyLatent", dict(width=1024, height=1024, batch_size=1, resolution_binning=True),
                  {"model": ("1", 0)}),
            "7": ("SanaSample", sample(pag_scale=pag_scale),
                  {"model": ("1", 0), "positive": ("4", 0), "negative": ("5", 0), "latent": ("6", 0)}),
            "8": ("SanaDecode", dict(tiling="auto"), {"vae": ("3", 0), "samples": ("7", 0)}),
            "9": ("SaveImage", dict(filename_prefix=prefix), {"images": ("8", 0)})}


def i2i():
    return {**loaders(), **prompts(),
            "6": ("LoadImage", dict(image="sana_example_input.png", upload="image"), {}),
            "10": ("SanaEncodeImage", {}, {"vae": ("3", 0), "image": ("6", 0)}),
            "7": ("SanaSample", sample(denoise=0.6),
                  {"model": ("1", 0), "positive": ("4", 0), "negative": ("5", 0), "latent": ("10", 0)}),
            "8": ("SanaDecode", dict(tiling="auto"), {"vae": ("3", 0), "samples": ("7", 0)}),
            "9": ("SaveImage", dict(filename_prefix="sana/i2i"), {"images": ("8", 0)})}


def masked(image: str, prep: tuple, encoded: tuple, mask: tuple, prefix: str) -> dict:
    """LoadImage → prep (node 11) → SanaEncodeImage (of `encoded`) → SetLatentNoiseMask (`mask`) → SanaSample
    (denoise 1.0): the latent is kept where the mask is 0."""
    return {**loaders(), **prompts(),
            "6": ("LoadImage", dict(image=image, upload="image"), {}),
            "11": prep,
            "10": ("SanaEncodeImage", {}, {"vae": ("3", 0), "image": encoded}),
            "12": ("SetLatentNoiseMask", {}, {"samples": ("10", 0), "mask": mask}),
            "7": ("SanaSample", sample(denoise=1.0),
                  {"model": ("1", 0), "positive": ("4", 0), "negative": ("5", 0), "latent": ("12", 0)}),
            "8": ("SanaDecode", dict(tiling="auto"), {"vae": ("3", 0), "samples": ("7", 0)}),
            "9": ("SaveImage", dict(filename_prefix=prefix), {"images": ("8", 0)})}


def inpaint():
    """The mask is the input's alpha (LoadImage gives 1 - alpha: transparent = repaint), grown by 32 px. Paint your
    own mask in the mask editor (right-click the LoadImage node)."""
    grow = ("GrowMask", dict(expand=32, tapered_corners=False), {"mask": ("6", 1)})
    return masked("sana_example_inpaint.png", grow, ("6", 0), ("11", 0), "sana/inpaint")


def outpaint():
    """128 px of new canvas on the left and the right (multiples of 32, so the mask lines up with the latent)."""
    pad = ("ImagePadForOutpaint", dict(left=128, top=0, right=128, bottom=0, feathering=32), {"image": ("6", 0)})
    return masked("sana_example_input.png", pad, ("11", 0), ("11", 1), "sana/outpaint")


def lora_stack():
    """Two stacked LoRAs: SanaLoraLoader (model and, when the file has one, its Gemma-2 part), then
    SanaLoraLoaderModelOnly on its model. Each returns a patched clone; the loaders' inputs stay as they were."""
    graph = t2i(prefix="sana/lora")
    graph["20"] = ("SanaLoraLoader", dict(lora_name=LORAS[0], strength_model=0.8, strength_text_encoder=1.0),
                   {"model": ("1", 0), "text_encoder": ("2", 0)})
    graph["21"] = ("SanaLoraLoaderModelOnly", dict(lora_name=LORAS[1], strength_model=0.5), {"model": ("20", 0)})
    for node in ("4", "5"):
        graph[node][2]["text_encoder"] = ("20", 1)
    graph["7"][2]["model"] = ("21", 0)
    return graph


def controlnet():
    """LoadImage → Canny (a stand-in for an HED preprocessor) → Apply ControlNet (its vae: SanaToVAE) → SanaSample.
    The host resizes and centre-crops the control image to the latent's size ×32."""
    graph = t2i(prefix="sana/controlnet")
    graph["20"] = ("SanaLoadControlNet", dict(control_net_name=CONTROLNET), {})
    graph["21"] = ("LoadImage", dict(image="sana_example_input.png", upload="image"), {})
    graph["22"] = ("Canny", dict(low_threshold=0.4, high_threshold=0.8), {"image": ("21", 0)})
    graph["23"] = ("SanaToVAE", {}, {"vae": ("3", 0)})
    graph["24"] = ("ControlNetApplyAdvanced", dict(strength=1.0, start_percent=0.0, end_percent=1.0),
                   {"positive": ("4", 0), "negative": ("5", 0), "control_net": ("20", 0), "image": ("22", 0),
                    "vae": ("23", 0)})
    graph["7"][2].update(positive=("24", 0), negative=("24", 1))
    return graph


def one_node():
    return {"1": ("SanaLoadPipeline", dict(pipeline=MODEL, weight_dtype="auto"), {}),
            **prompts(te=("1", 1)),
            "6": ("SanaEmptyLatent", dict(width=1024, height=1024, batch_size=1, resolution_binning=True),
                  {"model": ("1", 0)}),
            "7": ("SanaSample", sample(),
                  {"model": ("1", 0), "positive": ("4", 0), "negative": ("5", 0), "latent": ("6", 0)}),
            "8": ("SanaDecode", dict(tiling="auto"), {"vae": ("1", 2), "samples": ("7", 0)}),
            "9": ("SaveImage", dict(filename_prefix="sana/pipeline"), {"images": ("8", 0)})}


WORKFLOWS = {
    "sana_text_to_image": t2i(),
    "sana_text_to_image_pag": t2i(pag_scale=2.0, prefix="sana/pag"),
    "sana_image_to_image": i2i(),
    "sana_inpaint": inpaint(),
    "sana_outpaint": outpaint(),
    "sana_pipeline_loader": one_node(),
    "sana_lora_stack": lora_stack(),
    "sana_controlnet": controlnet(),
}


def to_api(graph) -> dict:
    out = {}
    for nid, (kind, widgets, links) in graph.items():
        inputs = {k: v for k, v in widgets.items() if k != "upload"}
        inputs.update({k: [src, slot] for k, (src, slot) in links.items()})
        out[nid] = {"class_type": kind, "inputs": inputs, "_meta": {"title": kind}}
    return out


def to_ui(graph) -> dict:
    order = list(graph)
    nodes, links = [], []
    out_links: dict[tuple[str, int], list[int]] = {}
    for nid, (_, _, ins) in graph.items():
        for name, (src, slot) in ins.items():
            link_id = len(links) + 1
            links.append([link_id, int(src), slot, int(nid), name, OUTPUTS[graph[src][0]][slot]])
            out_links.setdefault((src, slot), []).append(link_id)
    col = {"SanaLoadTransformer": 0, "SanaLoadTextEncoder": 0, "SanaLoadDCAE": 0, "SanaLoadPipeline": 0,
           "LoadImage": 0, "SanaEncodePrompt": 1, "SanaEmptyLatent": 1, "SanaEncodeImage": 1, "GrowMask": 1,
           "ImagePadForOutpaint": 1, "SetLatentNoiseMask": 2, "SanaSample": 2, "SanaDecode": 3, "SaveImage": 3,
           "SanaLoraLoader": 1, "SanaLoraLoaderModelOnly": 1, "SanaLoadControlNet": 0, "SanaToVAE": 1, "Canny": 1,
           "ControlNetApplyAdvanced": 2}
    rows: dict[int, int] = {}
    for i, (nid, (kind, widgets, ins)) in enumerate(graph.items()):
        c = col[kind]
        r = rows.get(c, 0)
        rows[c] = r + 1
        values = []
        for w in WIDGETS[kind]:
            values.append(widgets[w])
            if w == "seed":
                values.append("fixed")
        node_inputs = []
        for name in ins:
            link = next(lk[0] for lk in links if lk[3] == int(nid) and lk[4] == name)
            node_inputs.append({"name": name, "type": links[link - 1][5], "link": link})
        outs = [{"name": t, "type": t, "links": out_links.get((nid, s), []), "slot_index": s}
                for s, t in enumerate(OUTPUTS[kind])]
        nodes.append({"id": int(nid), "type": kind, "pos": [40 + 380 * c, 40 + 260 * r],
                      "size": [340, 120 + 26 * len(values)], "flags": {}, "order": i, "mode": 0,
                      "inputs": node_inputs, "outputs": outs,
                      "properties": {"Node name for S&R": kind}, "widgets_values": values})
    ui_links = [[lk[0], lk[1], lk[2], lk[3], [n for n in graph[str(lk[3])][2]].index(lk[4]), lk[5]] for lk in links]
    return {"last_node_id": max(int(n) for n in order), "last_link_id": len(links), "nodes": nodes,
            "links": ui_links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def render() -> dict[Path, str]:
    files = {}
    for name, graph in WORKFLOWS.items():
        files[OUT / f"{name}.json"] = json.dumps(to_ui(graph), indent=1) + "\n"
        files[OUT / "api" / f"{name}.json"] = json.dumps(to_api(graph), indent=1) + "\n"
    return files


def main() -> int:
    files = render()
    if "--check" in sys.argv:
        stale = [str(p) for p, text in files.items() if not p.exists() or p.read_text() != text]
        if stale:
            print("out of date:", *stale, sep="\n  ")
            return 1
        return 0
    for p, text in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    print(f"wrote {len(files)} files under {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
