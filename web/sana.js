// Sana for ComfyUI — frontend helpers.
// SanaEmptyLatent: aspect-ratio presets and a live readout of the resolution bin, the latent size and the final crop
// (snapping to the bin table of the connected model's training resolution once its loader has run).
// Loader nodes: the detected variant after they run (e.g. "Sana 1.6B · 1024 px · bf16 · 1,604M params").
import { app } from "../../scripts/app.js";

// ratio → [height, width], generated from sana_core/bins.py; tests/test_browser.py checks the readouts against it.
const BIN_512 = {"0.25": [256, 1024], "0.28": [256, 928], "0.32": [288, 896], "0.33": [288, 864], "0.35": [288, 832], "0.4": [320, 800], "0.42": [320, 768], "0.48": [352, 736], "0.5": [352, 704], "0.52": [352, 672], "0.57": [384, 672], "0.6": [384, 640], "0.68": [416, 608], "0.72": [416, 576], "0.78": [448, 576], "0.82": [448, 544], "0.88": [480, 544], "0.94": [480, 512], "1.0": [512, 512], "1.07": [512, 480], "1.13": [544, 480], "1.21": [544, 448], "1.29": [576, 448], "1.38": [576, 416], "1.46": [608, 416], "1.67": [640, 384], "1.75": [672, 384], "2.0": [704, 352], "2.09": [736, 352], "2.4": [768, 320], "2.5": [800, 320], "3.0": [864, 288], "4.0": [1024, 256]};
const BIN_2048 = {"0.25": [1024, 4096], "0.26": [1024, 3968], "0.27": [1024, 3840], "0.28": [1024, 3712], "0.32": [1152, 3584], "0.33": [1152, 3456], "0.35": [1152, 3328], "0.4": [1280, 3200], "0.42": [1280, 3072], "0.48": [1408, 2944], "0.5": [1408, 2816], "0.52": [1408, 2688], "0.57": [1536, 2688], "0.6": [1536, 2560], "0.68": [1664, 2432], "0.72": [1664, 2304], "0.78": [1792, 2304], "0.82": [1792, 2176], "0.88": [1920, 2176], "0.94": [1920, 2048], "1.0": [2048, 2048], "1.07": [2048, 1920], "1.13": [2176, 1920], "1.21": [2176, 1792], "1.29": [2304, 1792], "1.38": [2304, 1664], "1.46": [2432, 1664], "1.67": [2560, 1536], "1.75": [2688, 1536], "2.0": [2816, 1408], "2.09": [2944, 1408], "2.4": [3072, 1280], "2.5": [3200, 1280], "2.89": [3328, 1152], "3.0": [3456, 1152], "3.11": [3584, 1152], "3.62": [3712, 1024], "3.75": [3840, 1024], "3.88": [3968, 1024], "4.0": [4096, 1024]};
const double = (t) => Object.fromEntries(Object.entries(t).map(([k, [h, w]]) => [k, [2 * h, 2 * w]]));
export const BIN_TABLES = { 512: BIN_512, 1024: double(BIN_512), 2048: BIN_2048, 4096: double(BIN_2048) };
export const ASPECT_PRESETS = ["custom", "1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9", "9:21"];

export function tableForSize(height, width) {
  const side = Math.sqrt(height * width);
  return [512, 1024, 2048, 4096].reduce((a, b) => (Math.abs(b - side) < Math.abs(a - side) ? b : a));
}

export function nearestBin(height, width, table) {
  const ar = height / width;
  let best = null;
  for (const [k, hw] of Object.entries(BIN_TABLES[table])) {  // insertion order: ties go to the first key
    if (best === null || Math.abs(parseFloat(k) - ar) < Math.abs(parseFloat(best[0]) - ar)) best = [k, hw];
  }
  return best[1];
}

// What SanaEmptyLatent + SanaDecode will do for this request.
export function binReadout(width, height, binning, modelResolution) {
  if (!binning) {
    return { table: null, bin: [height, width], latent: [height / 32, width / 32], crop: null,
             valid: height % 32 === 0 && width % 32 === 0 };
  }
  const table = modelResolution || tableForSize(height, width);
  const [bh, bw] = nearestBin(height, width, table);
  const same = bh === height && bw === width;
  return { table, bin: [bh, bw], latent: [bh / 32, bw / 32], crop: same ? null : [height, width], valid: true };
}

export function readoutText(r) {
  if (!r.valid) return "⚠ width and height must be multiples of 32 with binning off";
  const lat = `latent ${r.latent[1]}×${r.latent[0]}`;
  if (r.table === null) return `${r.bin[1]}×${r.bin[0]} · ${lat} · no binning`;
  const crop = r.crop ? ` → crop ${r.crop[1]}×${r.crop[0]}` : "";
  return `bin ${r.bin[1]}×${r.bin[0]} (${r.table} px table) · ${lat}${crop}`;
}

// Width/height for an aspect preset "w:h", snapped to the table's bin nearest that ratio.
export function presetSize(preset, table) {
  const [a, b] = preset.split(":").map(Number);
  const [h, w] = nearestBin(b, a, table);
  return { width: w, height: h };
}

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function linkedResolution(node) {
  const input = node.inputs?.find((i) => i.name === "model");
  if (!input || input.link == null) return null;
  const links = app.graph.links;
  const link = typeof links?.get === "function" ? links.get(input.link) : links?.[input.link];
  const source = link && app.graph.getNodeById(link.origin_id);
  return source?.sanaResolution ?? null;
}

function drawLines(node, ctx, lines) {
  if (!lines?.length || node.flags?.collapsed) return;
  ctx.save();
  ctx.font = "12px sans-serif";
  ctx.fillStyle = "#9ad";
  lines.forEach((line, i) => ctx.fillText(line, 10, node.size[1] - 8 - (lines.length - 1 - i) * 15));
  ctx.restore();
}

function setupEmptyLatent(node) {
  const update = () => {
    const w = widget(node, "width")?.value, h = widget(node, "height")?.value;
    const binning = widget(node, "resolution_binning")?.value;
    node.sanaReadout = readoutText(binReadout(w, h, binning, linkedResolution(node)));
    node.setDirtyCanvas?.(true, true);
  };
  for (const name of ["width", "height", "resolution_binning"]) {
    const w = widget(node, name);
    if (!w) continue;
    const cb = w.callback;
    w.callback = function (...args) { const r = cb?.apply(this, args); update(); return r; };
  }
  const preset = node.addWidget("combo", "aspect_preset", "custom", (value) => {
    if (value === "custom") return;
    const w = widget(node, "width"), h = widget(node, "height");
    const size = presetSize(value, linkedResolution(node) || tableForSize(h.value, w.value));
    w.value = size.width;
    h.value = size.height;
    update();
  }, { values: ASPECT_PRESETS, serialize: false });
  preset.serialize = false;  // UI only: never in widgets_values nor in the prompt
  node.sanaUpdate = update;
  const onConnectionsChange = node.onConnectionsChange;
  node.onConnectionsChange = function (...args) { const r = onConnectionsChange?.apply(this, args); update(); return r; };
  const onDraw = node.onDrawForeground;
  node.onDrawForeground = function (ctx) { onDraw?.apply(this, arguments); drawLines(this, ctx, [this.sanaReadout]); };
  node.setSize([Math.max(node.size[0], 330), node.computeSize()[1] + 20]);
  update();
}

const LOADERS = ["SanaLoadTransformer", "SanaLoadPipeline", "SanaLoadTextEncoder", "SanaLoadDCAE"];

app.registerExtension({
  name: "sana.comfyui.helpers",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === "SanaEmptyLatent") {
      const created = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const r = created?.apply(this, arguments);
        setupEmptyLatent(this);
        return r;
      };
    }
    if (LOADERS.includes(nodeData.name)) {
      const executed = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        executed?.apply(this, arguments);
        this.sanaInfo = message?.text ?? [];
        const res = this.sanaInfo.map((t) => /· (\d+) px ·/.exec(t)).find(Boolean);
        if (res) this.sanaResolution = parseInt(res[1]);
        this.setSize([Math.max(this.size[0], 380), this.computeSize()[1] + 16 * this.sanaInfo.length]);
        for (const n of app.graph._nodes ?? app.graph.nodes ?? []) n.sanaUpdate?.();
        this.setDirtyCanvas?.(true, true);
      };
      const onDraw = nodeType.prototype.onDrawForeground;
      nodeType.prototype.onDrawForeground = function (ctx) {
        onDraw?.apply(this, arguments);
        drawLines(this, ctx, this.sanaInfo);
      };
    }
  },
});
