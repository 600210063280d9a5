// Sana for ComfyUI — frontend helpers.
// SanaEmptyLatent: aspect-ratio presets and a live readout of the resolution bin, the latent size and the final crop
// (snapping to the bin table of the connected model's training resolution once its loader has run).
// Loader nodes: the detected variant after they run (e.g. "Sana 1.6B · 1024 px · bf16 · 1,604M params").
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";

export const ASPECT_PRESETS = ["custom", "1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9", "9:21"];

// GET /sana/<route>: the server computes every bin with the code SanaEmptyLatent runs (nodes/binning.py).
async function ask(route, params) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v != null).map(([k, v]) => [k, `${v}`]));
  const response = await api.fetchApi(`/sana/${route}?${query}`);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ?? response.statusText);
  return body;
}

// What SanaEmptyLatent + SanaDecode will do for this request: {valid, binning, table, bin, latent, crop} or
// {valid: false, binning, error}.
export function binReadout(width, height, binning, resolution) {
  return ask("bin", { width, height, binning, resolution });
}

export function readoutText(r) {
  if (!r.valid) return r.binning ? `⚠ ${r.error}` : "⚠ width and height must be multiples of 32 with binning off";
  const lat = `latent ${r.latent[1]}×${r.latent[0]}`;
  if (r.table === null) return `${r.bin[1]}×${r.bin[0]} · ${lat} · no binning`;
  const crop = r.crop ? ` → crop ${r.crop[1]}×${r.crop[0]}` : "";
  return `bin ${r.bin[1]}×${r.bin[0]} (${r.table} px table) · ${lat}${crop}`;
}

// Width/height for an aspect preset "w:h", snapped to the table's bin nearest that ratio: {width, height, table}.
export function presetSize(preset, width, height, resolution) {
  return ask("aspect", { aspect: preset, width, height, resolution });
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
  let asked = 0;  // only the newest answer is shown
  const update = async () => {
    const w = widget(node, "width")?.value, h = widget(node, "height")?.value;
    const binning = widget(node, "resolution_binning")?.value;
    const mine = ++asked;
    let text;
    try {
      text = readoutText(await binReadout(w, h, binning, linkedResolution(node)));
    } catch (e) {
      text = `⚠ ${e.message}`;
    }
    if (mine !== asked) return;
    node.sanaReadout = text;
    node.setDirtyCanvas?.(true, true);
  };
  const refresh = () => (node.sanaPending = update());  // tests await node.sanaPending
  for (const name of ["width", "height", "resolution_binning"]) {
    const w = widget(node, name);
    if (!w) continue;
    const cb = w.callback;
    w.callback = function (...args) { const r = cb?.apply(this, args); refresh(); return r; };
  }
  const preset = node.addWidget("combo", "aspect_preset", "custom", (value) => {
    if (value === "custom") return;
    const w = widget(node, "width"), h = widget(node, "height");
    node.sanaPending = presetSize(value, w.value, h.value, linkedResolution(node)).then((size) => {
      w.value = size.width;
      h.value = size.height;
      return update();
    }, (e) => { node.sanaReadout = `⚠ ${e.message}`; });
  }, { values: ASPECT_PRESETS, serialize: false });
  preset.serialize = false;  // UI only: never in widgets_values nor in the prompt
  node.sanaUpdate = refresh;
  const onConnectionsChange = node.onConnectionsChange;
  node.onConnectionsChange = function (...args) { const r = onConnectionsChange?.apply(this, args); refresh(); return r; };
  const onDraw = node.onDrawForeground;
  node.onDrawForeground = function (ctx) { onDraw?.apply(this, arguments); drawLines(this, ctx, [this.sanaReadout]); };
  node.setSize([Math.max(node.size[0], 330), node.computeSize()[1] + 20]);
  refresh();
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
        const model = message?.sana_model?.[0];  // {variant, resolution, dtype, params} from the transformer loaders
        if (model) this.sanaResolution = model.resolution;
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
