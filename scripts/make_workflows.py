"""Writes the example workflows: UI format in example_workflows/ (ComfyUI lists them as templates) and their
API-format twins in example_workflows/api/ (what headless tests and scripts queue). One description, two formats,
so the twins cannot drift. Run: python scripts/make_workflows.py [--check]

ComfyUI's frontend (1.32) knows a pack's template by its file name only: the name is the card's title, its
description, what the template search matches and the name of the opened tab; `<name>.jpg` beside it is the
thumbnail (scripts/make_thumbnails.py). So the UI files carry human titles, and the API twins keep stable
snake_case names. The Note node is UI-only (the frontend leaves it out of the prompt)."""

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
EXAMPLE_IMAGE = "example.png"  # 768 x 768; ComfyUI ships it in input/
PROMPT = "a cyberpunk cat with a neon sign that says \"Sana\""
DRAWING = "a watercolor painting of a girl with yellow hair in a pink dress on a green hill, blue sky, white clouds"
RED_DRESS = "a child's drawing of a girl in a red dress with white polka dots"
NEG = ""
VIDEO_MODEL = "SANA-Video_2B_480p_diffusers"
WAN_VAE = "wan_2.1_vae.safetensors"
VIDEO_PROMPT = ("a red fox trots through fresh snow in a quiet birch forest at sunrise, its breath steaming, the camera "
                "following it slowly from the side")
# the published SANA-Video examples' negative prompt (sana_core/video.py DEFAULT_NEGATIVE)
VIDEO_NEG = ("A chaotic sequence with misshapen, deformed limbs in heavy motion blur, sudden disappearance, jump cuts, "
             "jerky movements, rapid shot changes, frames out of sync, inconsistent character shapes, temporal "
             "artifacts, jitter, and ghosting effects, creating a disorienting visual experience.")
NOTE_ID = "50"  # UI-only; ids below it are the public contract of each template

# Widget order per node type (input names, in INPUT_TYPES order; a seed with control_after_generate adds a slot).
WIDGETS = {
    "SanaLoadTransformer": ["model_name", "weight_dtype"],
    "SanaLoadTextEncoder": ["text_encoder", "dtype"],
    "SanaLoadDCAE": ["vae_name", "dtype"],
    "SanaLoadPipeline": ["pipeline", "weight_dtype"],
    "SanaEncodePrompt": ["text", "use_chi", "max_length", "chi", "clean_caption", "instruction", "motion_score"],
    "SanaEmptyLatent": ["width", "height", "batch_size", "resolution_binning"],
    "SanaSample": ["seed", "steps", "cfg", "sampler", "flow_shift", "pag_scale", "pag_adaptive_scale", "pag_layers",
                   "denoise"],
    "SanaDecode": ["tiling"],
    "SanaEncodeImage": [],
    "SaveImage": ["filename_prefix"],
    "LoadImage": ["image", "upload"],
    "GrowMask": ["expand", "tapered_corners"],
    "ImagePadForOutpaint": ["left", "top", "right", "bottom", "feathering"],
    "SolidMask": ["value", "width", "height"],
    "MaskComposite": ["x", "y", "operation"],
    "SetLatentNoiseMask": [],
    "SanaLoraLoader": ["lora_name", "strength_model", "strength_text_encoder"],
    "SanaLoraLoaderModelOnly": ["lora_name", "strength_model"],
    "SanaLoadControlNet": ["control_net_name"],
    "SanaToVAE": [],
    "Canny": ["low_threshold", "high_threshold"],
    "ControlNetApplyAdvanced": ["strength", "start_percent", "end_percent"],
    "SanaEmptyVideoLatent": ["width", "height", "length", "batch_size", "resolution_binning"],
    "SanaImageToVideo": ["width", "height", "length", "batch_size", "resolution_binning"],
    "SanaDecodeVideo": ["tiled"],
    "CreateVideo": ["fps"],
    "SaveVideo": ["filename_prefix", "format", "codec"],
    "Note": ["text"],
}
OUTPUTS = {
    "SanaLoadTransformer": ["SANA_MODEL"], "SanaLoadTextEncoder": ["SANA_TEXT_ENCODER"], "SanaLoadDCAE": ["SANA_VAE"],
    "SanaLoadPipeline": ["SANA_MODEL", "SANA_TEXT_ENCODER", "SANA_VAE", "VAE"], "SanaEncodePrompt": ["CONDITIONING"],
    "SanaEmptyLatent": ["LATENT"], "SanaSample": ["LATENT"], "SanaDecode": ["IMAGE"], "SanaEncodeImage": ["LATENT"],
    "SaveImage": [], "LoadImage": ["IMAGE", "MASK"], "GrowMask": ["MASK"], "ImagePadForOutpaint": ["IMAGE", "MASK"],
    "SolidMask": ["MASK"], "MaskComposite": ["MASK"],
    "SetLatentNoiseMask": ["LATENT"], "SanaLoraLoader": ["SANA_MODEL", "SANA_TEXT_ENCODER"],
    "SanaLoraLoaderModelOnly": ["SANA_MODEL"], "SanaLoadControlNet": ["CONTROL_NET"], "SanaToVAE": ["VAE"],
    "Canny": ["IMAGE"], "ControlNetApplyAdvanced": ["CONDITIONING", "CONDITIONING"], "Note": [],
    "SanaEmptyVideoLatent": ["LATENT"], "SanaImageToVideo": ["CONDITIONING", "CONDITIONING", "LATENT"],
    "SanaDecodeVideo": ["IMAGE"], "CreateVideo": ["VIDEO"], "SaveVideo": [],
}
# UI layout: the column of each node type (empty columns are closed up), and the height of the taller ones (the rest
# are sized by their widgets and sockets).
COLUMN = {"Note": 0, "SanaLoadTransformer": 0, "SanaLoadTextEncoder": 0, "SanaLoadDCAE": 0, "SanaLoadPipeline": 0,
          "LoadImage": 0, "SanaLoadControlNet": 0, "SanaLoraLoader": 1, "SanaLoraLoaderModelOnly": 1,
          "SanaEncodePrompt": 1, "SanaEmptyLatent": 1, "SanaEncodeImage": 1, "SanaToVAE": 1, "Canny": 1,
          "ImagePadForOutpaint": 2, "SolidMask": 2, "MaskComposite": 2, "GrowMask": 2, "ControlNetApplyAdvanced": 3,
          "SetLatentNoiseMask": 3, "SanaSample": 3, "SanaDecode": 4, "SaveImage": 4, "SanaEmptyVideoLatent": 1,
          "SanaImageToVideo": 2, "SanaDecodeVideo": 4, "CreateVideo": 4, "SaveVideo": 5}
HEIGHT = {"Note": 440, "SanaEncodePrompt": 320, "SanaEmptyLatent": 200, "LoadImage": 400, "SaveImage": 400,
          "SaveVideo": 400}


def node(kind: str, widgets: dict | None = None, links: dict | None = None, title: str | None = None) -> tuple:
    return kind, widgets or {}, links or {}, title


def sample(seed=42, steps=20, cfg=4.5, pag_scale=0.0, denoise=1.0, sampler="flow_dpm_solver"):
    return dict(seed=seed, steps=steps, cfg=cfg, sampler=sampler, flow_shift=0.0, pag_scale=pag_scale,
                pag_adaptive_scale=0.0, pag_layers="8", denoise=denoise)


def loaders():
    return {
        "1": node("SanaLoadTransformer", dict(model_name=MODEL, weight_dtype="auto")),
        "2": node("SanaLoadTextEncoder", dict(text_encoder=GEMMA, dtype="auto")),
        "3": node("SanaLoadDCAE", dict(vae_name=DCAE, dtype="auto")),
    }


def prompts(te=("2", 0), text=PROMPT, negative=NEG, video=False):
    """The positive (with the instruction; SANA-Video's and a motion score of 30 for ``video``) and the negative."""
    kind, score = ("video", 30) if video else ("image", -1)
    return {
        "4": node("SanaEncodePrompt", dict(text=text, use_chi=True, max_length=300, chi="", clean_caption=False,
                                           instruction=kind, motion_score=score), {"text_encoder": te},
                  "Positive prompt"),
        "5": node("SanaEncodePrompt", dict(text=negative, use_chi=False, max_length=300, chi="", clean_caption=False,
                                           instruction=kind, motion_score=-1), {"text_encoder": te},
                  "Negative prompt"),
    }


def load_example(nid="6", title=None):
    return {nid: node("LoadImage", dict(image=EXAMPLE_IMAGE, upload="image"), title=title)}


def t2i(pag_scale=0.0, prefix="sana/t2i"):
    return {**loaders(), **prompts(),
            "6": node("SanaEmptyLatent", dict(width=1024, height=1024, batch_size=1, resolution_binning=True),
                      {"model": ("1", 0)}),
            "7": node("SanaSample", sample(pag_scale=pag_scale),
                      {"model": ("1", 0), "positive": ("4", 0), "negative": ("5", 0), "latent": ("6", 0)}),
            "8": node("SanaDecode", dict(tiling="auto"), {"vae": ("3", 0), "samples": ("7", 0)}),
            "9": node("SaveImage", dict(filename_prefix=prefix), {"images": ("8", 0)})}


def i2i():
    return {**loaders(), **prompts(text=DRAWING), **load_example(),
            "10": node("SanaEncodeImage", {}, {"vae": ("3", 0), "image": ("6", 0)}),
            "7": node("SanaSample", sample(denoise=0.6),
                      {"model": ("1", 0), "positive": ("4", 0), "negative": ("5", 0), "latent": ("10", 0)}),
            "8": node("SanaDecode", dict(tiling="auto"), {"vae": ("3", 0), "samples": ("7", 0)}),
            "9": node("SaveImage", dict(filename_prefix="sana/i2i"), {"images": ("8", 0)})}


def masked(text: str, load: dict, prep: dict, encoded: tuple, mask: tuple, prefix: str) -> dict:
    """LoadImage (6) → prep (11 and helpers) → SanaEncodeImage (of `encoded`) → SetLatentNoiseMask (`mask`) →
    SanaSample (denoise 1.0): the latent is kept where the mask is 0."""
    return {**loaders(), **prompts(text=text), **load, **prep,
            "10": node("SanaEncodeImage", {}, {"vae": ("3", 0), "image": encoded}),
            "12": node("SetLatentNoiseMask", {}, {"samples": ("10", 0), "mask": mask}),
            "7": node("SanaSample", sample(denoise=1.0),
                      {"model": ("1", 0), "positive": ("4", 0), "negative": ("5", 0), "latent": ("12", 0)}),
            "8": node("SanaDecode", dict(tiling="auto"), {"vae": ("3", 0), "samples": ("7", 0)}),
            "9": node("SaveImage", dict(filename_prefix=prefix), {"images": ("8", 0)})}


# The inpaint template's default region on example.png (its dress): x, y, width, height, all multiples of 32.
INPAINT_REGION = (256, 320, 256, 352)


def inpaint():
    """The mask is a default region made in the graph (a SolidMask placed on a blank mask of the image's size) plus
    whatever the user paints on the LoadImage node (its mask is 64 x 64 zeros when nothing is painted), grown 32 px.
    ImagePadForOutpaint with no padding is the blank mask: zeros, the image's size."""
    x, y, w, h = INPAINT_REGION
    prep = {"14": node("ImagePadForOutpaint", dict(left=0, top=0, right=0, bottom=0, feathering=0),
                       {"image": ("6", 0)}, "Blank mask, image-sized"),
            "15": node("SolidMask", dict(value=1.0, width=w, height=h), title="Default region (value 0: off)"),
            "16": node("MaskComposite", dict(x=x, y=y, operation="add"), {"destination": ("14", 1), "source": ("15", 0)},
                       "Place the default region"),
            "17": node("MaskComposite", dict(x=0, y=0, operation="add"), {"destination": ("16", 0), "source": ("6", 1)},
                       "Add the mask you paint"),
            "11": node("GrowMask", dict(expand=32, tapered_corners=False), {"mask": ("17", 0)})}
    load = load_example(title="Load image (right-click: Open in MaskEditor)")
    return masked(RED_DRESS, load, prep, ("6", 0), ("11", 0), "sana/inpaint")


def outpaint():
    """128 px of new canvas on the left and the right (multiples of 32, so the mask lines up with the latent)."""
    pad = {"11": node("ImagePadForOutpaint", dict(left=128, top=0, right=128, bottom=0, feathering=32),
                      {"image": ("6", 0)})}
    return masked(DRAWING, load_example(), pad, ("11", 0), ("11", 1), "sana/outpaint")


def lora_stack():
    """Two stacked LoRAs: SanaLoraLoader (model and, when the file has one, its Gemma-2 part), then
    SanaLoraLoaderModelOnly on its model. Each returns a patched clone; the loaders' inputs stay as they were."""
    graph = t2i(prefix="sana/lora")
    graph["20"] = node("SanaLoraLoader", dict(lora_name=LORAS[0], strength_model=0.8, strength_text_encoder=1.0),
                       {"model": ("1", 0), "text_encoder": ("2", 0)})
    graph["21"] = node("SanaLoraLoaderModelOnly", dict(lora_name=LORAS[1], strength_model=0.5), {"model": ("20", 0)})
    for nid in ("4", "5"):
        graph[nid][2]["text_encoder"] = ("20", 1)
    graph["7"][2]["model"] = ("21", 0)
    return graph


def controlnet():
    """LoadImage → Canny (a stand-in for an HED preprocessor) → Apply ControlNet (its vae: SanaToVAE) → SanaSample.
    The host resizes and centre-crops the control image to the latent's size ×32."""
    graph = t2i(prefix="sana/controlnet")
    graph["4"][1]["text"] = DRAWING
    graph["20"] = node("SanaLoadControlNet", dict(control_net_name=CONTROLNET))
    graph.update(load_example("21"))
    # Equal thresholds: the host's Canny then needs one hysteresis pass, not one per pixel of the longest weak edge
    # (on 2 CPU cores, example.png took 69 s at 0.4 / 0.8 and 2 s at 0.2 / 0.2).
    graph["22"] = node("Canny", dict(low_threshold=0.2, high_threshold=0.2), {"image": ("21", 0)})
    graph["23"] = node("SanaToVAE", {}, {"vae": ("3", 0)})
    graph["24"] = node("ControlNetApplyAdvanced", dict(strength=1.0, start_percent=0.0, end_percent=1.0),
                       {"positive": ("4", 0), "negative": ("5", 0), "control_net": ("20", 0), "image": ("22", 0),
                        "vae": ("23", 0)})
    graph["7"][2].update(positive=("24", 0), negative=("24", 1))
    return graph


def one_node():
    return {"1": node("SanaLoadPipeline", dict(pipeline=MODEL, weight_dtype="auto")),
            **prompts(te=("1", 1)),
            "6": node("SanaEmptyLatent", dict(width=1024, height=1024, batch_size=1, resolution_binning=True),
                      {"model": ("1", 0)}),
            "7": node("SanaSample", sample(),
                      {"model": ("1", 0), "positive": ("4", 0), "negative": ("5", 0), "latent": ("6", 0)}),
            "8": node("SanaDecode", dict(tiling="auto"), {"vae": ("1", 2), "samples": ("7", 0)}),
            "9": node("SaveImage", dict(filename_prefix="sana/pipeline"), {"images": ("8", 0)})}


VIDEO_SIZE = dict(width=832, height=480, length=81, batch_size=1, resolution_binning=True)


def video_output(graph: dict, prefix: str) -> dict:
    """Sana Decode Video (the repo's Wan VAE) → Create Video (16 fps, as the published examples) → Save Video (MP4)."""
    return {**graph,
            "8": node("SanaDecodeVideo", dict(tiled=False), {"vae": ("1", 3), "samples": ("7", 0)}),
            "9": node("CreateVideo", dict(fps=16.0), {"images": ("8", 0)}),
            "10": node("SaveVideo", dict(filename_prefix=prefix, format="mp4", codec="h264"), {"video": ("9", 0)})}


def t2v():
    return video_output({
        "1": node("SanaLoadPipeline", dict(pipeline=VIDEO_MODEL, weight_dtype="auto")),
        **prompts(te=("1", 1), text=VIDEO_PROMPT, negative=VIDEO_NEG, video=True),
        "6": node("SanaEmptyVideoLatent", VIDEO_SIZE, {"model": ("1", 0)}),
        "7": node("SanaSample", sample(steps=50, cfg=6.0),
                  {"model": ("1", 0), "positive": ("4", 0), "negative": ("5", 0), "latent": ("6", 0)})},
        "sana/t2v")


def i2v():
    """The start image (example.png, square) is centre-cropped to the video's 832:480, then held as frame 1."""
    return video_output({
        "1": node("SanaLoadPipeline", dict(pipeline=VIDEO_MODEL, weight_dtype="auto")),
        **prompts(te=("1", 1), text=DRAWING + ", the girl turns and waves, clouds drift across the sky",
                  negative=VIDEO_NEG, video=True),
        **load_example("11", "Start image"),
        "6": node("SanaImageToVideo", VIDEO_SIZE, {"positive": ("4", 0), "negative": ("5", 0), "vae": ("1", 3),
                                                    "start_image": ("11", 0), "model": ("1", 0)}),
        "7": node("SanaSample", sample(steps=50, cfg=6.0),
                  {"model": ("1", 0), "positive": ("6", 0), "negative": ("6", 1), "latent": ("6", 2)})},
        "sana/i2v")


# --- the Note each template carries: which files go where, then what is particular to it ---
SPLIT_FILES = (
    f"• Efficient-Large-Model/{MODEL} → models/diffusion_models/{MODEL}/ (the whole repository folder)",
    f"• Efficient-Large-Model/{GEMMA} → models/text_encoders/{GEMMA}/",
    f"• mit-han-lab/{DCAE} → models/vae/{DCAE}/",
)
PIPELINE_FILES = (f"• Efficient-Large-Model/{MODEL} → models/diffusers/{MODEL}/ (the whole repository: transformer, "
                  "Gemma-2 text encoder and DC-AE in one folder)",)
VIDEO_FILES = (f"• Efficient-Large-Model/{VIDEO_MODEL} → models/diffusers/{VIDEO_MODEL}/ (the whole repository: "
               "transformer, Gemma-2 text encoder and Wan 2.1 VAE in one folder; Sana Load Pipeline's VAE output is "
               f"its Wan VAE; Comfy-Org's {WAN_VAE} in models/vae/ through Load VAE works the same)",)
VIDEO_LINE = ("81 frames (the Wan VAE takes 4k+1), 832 x 480 snapped to the model's 480p bins, 50 steps, cfg 6 (the "
              "reference's defaults); motion_score on the positive prompt appends ' motion score: 30.'. Save Video "
              "writes an MP4 to output/sana/.")
PROMPT_LINE = "Positive prompt: what the image shows. Negative prompt: what to steer away from (used when cfg > 1)."
EXAMPLE_LINE = (f"Input: input/{EXAMPLE_IMAGE}, which ComfyUI ships. Upload your own picture in the Load image node; "
                "sizes are cropped to multiples of 32.")


def note(title: str, files: tuple[str, ...], *lines: str) -> str:
    pick = "pick them in the loaders" if len(files) > 1 else "pick it in the loader"
    return "\n".join([title, "", "Files (Hugging Face repository → ComfyUI folder):", *files,
                      f"Then press R in the editor (refresh) and {pick}.", "", *lines, *([""] if lines else []),
                      PROMPT_LINE])


def region_line() -> str:
    x, y, w, h = INPAINT_REGION
    return (f"What is repainted: the default region (a {w} x {h} px Solid Mask placed at x {x}, y {y}) plus any mask you "
            "paint: right-click Load image → Open in MaskEditor, paint, Save. Set the default region's value to 0 to "
            "repaint only your own mask. The mask is grown 32 px; keep positions and sizes multiples of 32.")


# API twin's name: (template name: the title the frontend shows, graph, note text)
TEMPLATES = {
    "sana_text_to_image": ("Sana text to image", t2i(), note(
        "Text to image, 1024 x 1024, Flow-DPM-Solver, 20 steps.", SPLIT_FILES,
        "Sana Empty Latent snaps width and height to the model's resolution bins.")),
    "sana_text_to_image_pag": ("Sana text to image with PAG", t2i(pag_scale=2.0, prefix="sana/pag"), note(
        "Text to image with perturbed-attention guidance (PAG).", SPLIT_FILES,
        "PAG: pag_scale 2.0 on Sana Sample (0 turns it off); pag_layers names the transformer blocks it perturbs.")),
    "sana_image_to_image": ("Sana image to image", i2i(), note(
        "Image to image: the input is encoded, noised and resampled.", SPLIT_FILES, EXAMPLE_LINE,
        "denoise 0.6 on Sana Sample: lower keeps more of the input.")),
    "sana_inpaint": ("Sana inpaint", inpaint(), note(
        "Inpaint: repaint part of an image, keep the rest.", SPLIT_FILES, EXAMPLE_LINE, region_line())),
    "sana_outpaint": ("Sana outpaint", outpaint(), note(
        "Outpaint: extend an image beyond its borders.", SPLIT_FILES, EXAMPLE_LINE,
        "Pad for outpaint adds 128 px left and right (multiples of 32, so the mask lines up with the latent); "
        "feathering 32 blends the seam.")),
    "sana_pipeline_loader": ("Sana text to image (one loader node)", one_node(), note(
        "Text to image with the one-node loader, Sana Load Pipeline.", PIPELINE_FILES)),
    "sana_lora_stack": ("Sana LoRA stack", lora_stack(), note(
        "Two stacked LoRAs on text to image.", SPLIT_FILES + (
            "• your Sana LoRA files (.safetensors) → models/loras/ (the names in the two LoRA loaders are "
            "placeholders: pick yours)",),
        "Sana LoRA Loader patches the model (0.8) and, when the file has one, the text encoder; the model-only "
        "loader adds a second LoRA at 0.5.")),
    "sana_controlnet": ("Sana ControlNet", controlnet(), note(
        "ControlNet: the picture's edges steer the layout.", SPLIT_FILES + (
            f"• Sana_600M_1024px_ControlNet_HED, converted to a diffusers folder → models/controlnet/{CONTROLNET}/ "
            "(or its single .safetensors, or the NVlabs .pth, in models/controlnet/)",),
        EXAMPLE_LINE,
        "Canny stands in for an HED edge preprocessor (the released Sana ControlNets were trained on HED edges).")),
    "sana_text_to_video": ("Sana text to video", t2v(), note(
        "SANA-Video text to video, 480p.", VIDEO_FILES, VIDEO_LINE)),
    "sana_image_to_video": ("Sana image to video", i2v(), note(
        "SANA-Video image to video: the video starts from your picture.", VIDEO_FILES, EXAMPLE_LINE.replace(
            "sizes are cropped to multiples of 32", "it is centre-cropped to the video's aspect ratio and resized"),
        VIDEO_LINE)),
}


def to_api(graph) -> dict:
    out = {}
    for nid, (kind, widgets, links, title) in graph.items():
        inputs = {k: v for k, v in widgets.items() if k != "upload"}
        inputs.update({k: [src, slot] for k, (src, slot) in links.items()})
        out[nid] = {"class_type": kind, "inputs": inputs, "_meta": {"title": title or kind}}
    return out


def to_ui(graph, note_text: str) -> dict:
    graph = {NOTE_ID: node("Note", dict(text=note_text), title="Read me: models and inputs"), **graph}
    links = []
    out_links: dict[tuple[str, int], list[int]] = {}
    for nid, (_, _, ins, _) in graph.items():
        for name, (src, slot) in ins.items():
            link_id = len(links) + 1
            links.append([link_id, int(src), slot, int(nid), name, OUTPUTS[graph[src][0]][slot]])
            out_links.setdefault((src, slot), []).append(link_id)
    bottom: dict[int, int] = {}
    columns = sorted({COLUMN[kind] for kind, *_ in graph.values()})
    nodes = []
    for i, (nid, (kind, widgets, ins, title)) in enumerate(graph.items()):
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
        c = columns.index(COLUMN[kind])
        height = HEIGHT.get(kind, 30 + 24 * (len(values) + max(len(ins), len(outs))))
        y = bottom.get(c, 40)
        bottom[c] = y + height + 50
        ui = {"id": int(nid), "type": kind, "pos": [40 + 440 * c, y], "size": [400, height], "flags": {},
              "order": i, "mode": 0, "inputs": node_inputs, "outputs": outs}
        if title:
            ui["title"] = title
        ui["properties"] = {} if kind == "Note" else {"Node name for S&R": kind}
        ui["widgets_values"] = values
        if kind == "Note":
            ui.update(color="#432", bgcolor="#653")
        nodes.append(ui)
    ui_links = [[lk[0], lk[1], lk[2], lk[3], list(graph[str(lk[3])][2]).index(lk[4]), lk[5]] for lk in links]
    return {"last_node_id": max(int(n) for n in graph), "last_link_id": len(links), "nodes": nodes,
            "links": ui_links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def render() -> dict[Path, str]:
    files = {}
    for api_name, (name, graph, note_text) in TEMPLATES.items():
        files[OUT / f"{name}.json"] = json.dumps(to_ui(graph, note_text), indent=1) + "\n"
        files[OUT / "api" / f"{api_name}.json"] = json.dumps(to_api(graph), indent=1) + "\n"
    return files


def main() -> int:
    files = render()
    stray = [p for p in [*OUT.glob("*.json"), *(OUT / "api").glob("*.json")] if p not in files]
    if "--check" in sys.argv:
        stale = [str(p) for p, text in files.items() if not p.exists() or p.read_text() != text]
        if stale or stray:
            print("out of date:", *stale, *(f"{p} (no longer generated)" for p in stray), sep="\n  ")
            return 1
        return 0
    for p in stray:
        p.unlink()
    for p, text in files.items():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    print(f"wrote {len(files)} files under {OUT}" + (f", removed {len(stray)} stale" if stray else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
