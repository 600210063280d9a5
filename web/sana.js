// Sana for ComfyUI — frontend helpers, the same in both renderers (the classic canvas and Nodes 2.0).
// SanaEmptyLatent: aspect-ratio presets and a readout of the resolution bin, the latent size and the resize back, in
// the bin table of the connected model, which the server reads off the loader's files (GET /sana/model).
// Loader nodes: the detected variant before a run, what the loader reported after it.
// Widget values change through widget.setValue (both renderers follow it); the readout and the loader lines are
// DOM widgets that wrap inside the node and are never saved nor queued.
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";

export const ASPECT_PRESETS = ["custom", "1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9", "9:21"];
export const UNKNOWN_TABLE = "model table unknown until the loader runs";
export const VIDEO_MODEL = "a SANA-Video model: its latents come from Sana Empty Video Latent";
const MODEL_WIDGET = { SanaLoadTransformer: "model_name", SanaLoadPipeline: "pipeline" };  // GET /sana/model knows these
const LOADERS = [...Object.keys(MODEL_WIDGET), "SanaLoadTextEncoder", "SanaLoadDCAE", "SanaLoadControlNet"];

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

// A loader's model as its files say: {known: true, variant, resolution, video} or {known: false, error}.
export function modelInfo(loader, name) {
  return ask("model", { loader, name });
}

// Width/height for an aspect preset "w:h", snapped to the table's bin nearest that ratio: {width, height, table}.
export function presetSize(preset, width, height, resolution) {
  return ask("aspect", { aspect: preset, width, height, resolution });
}

// SanaDecode's way back from the bin [H, W] to the request: scale to cover, then centre-crop (bins.resize_and_crop).
function backToRequest([bh, bw], [h, w]) {
  const ratio = Math.max(h / bh, w / bw);
  const cropped = Math.trunc(bh * ratio) !== h || Math.trunc(bw * ratio) !== w;
  const scale = ratio === 1 ? "" : `${ratio > 1 ? "upscale" : "downscale"} ${+ratio.toFixed(2)}× `;
  return cropped ? `${scale}${scale ? "and " : ""}crop ${w}×${h}` : `${scale}to ${w}×${h}`;
}

export function readoutText(r) {
  if (!r.valid) return r.binning ? `⚠ ${r.error}` : "⚠ width and height must be multiples of 32 with binning off";
  const lat = `latent ${r.latent[1]}×${r.latent[0]}`;
  if (r.table === null) return `${r.bin[1]}×${r.bin[0]} · ${lat} · no binning`;
  const back = r.crop ? ` → ${backToRequest(r.bin, r.crop)}` : "";
  return `bin ${r.bin[1]}×${r.bin[0]} (${r.table} px table) · ${lat}${back}`;
}

function widget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

// What both renderers observe: setValue runs the callbacks the Nodes 2.0 renderer wraps around each widget.
function setWidget(node, w, value) {
  if (!w || w.value === value) return;
  if (typeof w.setValue === "function" && app.canvas) w.setValue(value, { node, canvas: app.canvas });
  else { w.value = value; w.callback?.(value); }
}

function chain(object, method, after) {
  const before = object[method];
  object[method] = function (...args) { const r = before?.apply(this, args); after.apply(this, args); return r; };
}

// --- read-only text widgets ------------------------------------------------------------------------------------------

const FONT = 12, LINE = 16, MARGIN = 4, PAD = 4;
let measure;

function wrappedLines(text, width) {
  measure ??= document.createElement("canvas").getContext("2d");
  measure.font = `${FONT}px sans-serif`;
  let n = 0;
  for (const para of text.split("\n")) {
    let line = 0;
    n += 1;
    for (const word of para.split(" ")) {
      const w = measure.measureText(word).width, space = line ? measure.measureText(" ").width : 0;
      if (line && line + space + w > width) { n += 1; line = 0; }
      if (w > width) { n += Math.ceil(w / width) - 1; line = w % width; } else line += (line ? space : 0) + w;
    }
  }
  return n;
}

// A DOM widget showing lines of text: not in widgets_values (serialize) nor in the prompt (options.serialize). Its
// height is the text wrapped at the node's width, so the classic canvas sizes the node to it; Nodes 2.0 lays it out.
function addTextWidget(node, name) {
  const el = document.createElement("div");
  el.className = "sana-text";
  Object.assign(el.style, {
    font: `${FONT}px/${LINE}px sans-serif`, color: "#9ad", whiteSpace: "pre-wrap", overflowWrap: "anywhere",
    padding: `${PAD / 2}px ${PAD}px`, boxSizing: "border-box", width: "100%", overflow: "hidden", pointerEvents: "none",
  });
  let text = "", fitted = null;
  const height = () => (text
    ? wrappedLines(text, Math.max(40, node.size[0] - 2 * MARGIN - 2 * PAD)) * LINE + PAD + 2 * MARGIN + 2 : 0);
  const w = node.addDOMWidget(name, "sana_text", el, {
    serialize: false, hideOnZoom: false, margin: MARGIN,
    getValue: () => text, setValue: () => {}, getMinHeight: height, getMaxHeight: height,
  });
  w.serialize = false;
  w.show = (value) => {
    if (value === text) return;
    text = value;
    el.textContent = value;
    if (!LiteGraph.vueNodesMode) {  // the classic canvas: fit the text (never widen, keep a height the user gave)
      const need = node.computeSize()[1];
      if (node.size[1] < need || node.size[1] === fitted) node.setSize([node.size[0], (fitted = need)]);
    }
    node.setDirtyCanvas?.(true, true);
  };
  return w;
}

// --- loaders -----------------------------------------------------------------------------------------------------------

function loaderKey(node) {
  return JSON.stringify((node.widgets ?? []).filter((w) => w.serialize !== false).map((w) => w.value));
}

function setupLoader(node, type) {
  const info = addTextWidget(node, "sana_info");
  const nameWidget = MODEL_WIDGET[type];
  // The model as its files say, asked once per model name: {known, variant, resolution} or {known: false, error}.
  node.sanaModel = function () {
    if (!nameWidget) return Promise.resolve({ known: false });
    const name = widget(this, nameWidget)?.value;
    if (this.sanaFiles?.name !== name) {
      const pending = name ? modelInfo(type, name).catch((e) => ({ known: false, error: e.message }))
        : Promise.resolve({ known: false });
      this.sanaFiles = { name, pending };
    }
    return this.sanaFiles.pending;
  };
  // What the loader reported when it last ran, while its widgets still hold what it ran with.
  node.sanaReported = function () {
    return this.sanaRan?.key === loaderKey(this) ? this.sanaRan : null;
  };
  node.sanaShow = async function () {
    const ran = this.sanaReported();
    if (ran) return info.show(ran.lines.join("\n"));
    const pending = this.sanaModel(), files = await pending;
    if (this.sanaReported() || pending !== this.sanaFiles?.pending) return;  // it ran, or its model changed, meanwhile
    info.show(files.known ? (files.video ? files.variant : `${files.variant} · ${files.resolution} px`) : "");
  };
  const refresh = () => {
    node.sanaPending = node.sanaShow();
    refreshReadouts();
  };
  for (const w of node.widgets ?? []) if (w !== info) chain(w, "callback", refresh);
  node.sanaRefresh = refresh;
  queueMicrotask(refresh);  // after a workflow's values are in (configure runs synchronously after creation)
}

// --- SanaEmptyLatent ---------------------------------------------------------------------------------------------------

// The loader behind the node's model input, through nodes passing a SANA_MODEL on (LoRA loaders, reroutes):
// {linked: false} | {linked: true, loader: node | null}. Links are read with isInputConnected / getInputNode (newer
// frontends deprecate reading slot.link).
function modelSource(node) {
  let slot = node.inputs?.findIndex((i) => i.name === "model") ?? -1;
  if (slot < 0 || !node.graph || !node.isInputConnected(slot)) return { linked: false };
  for (let hops = 0; hops < 64; hops++) {
    const source = node.getInputNode(slot);
    if (!source) return { linked: true, loader: null };
    if (source.sanaModel) return { linked: true, loader: source };
    slot = source.inputs?.findIndex((i) => i.type === "SANA_MODEL" || i.type === "*") ?? -1;
    node = source;
    if (slot < 0 || !node.isInputConnected(slot)) return { linked: true, loader: null };
  }
  return { linked: true, loader: null };
}

// The training resolution whose bin table the node will use: null without a model; undefined when unknown;
// "video" for a SANA-Video model (it takes no image latent).
async function modelResolution(node) {
  const source = modelSource(node);
  if (!source.linked) return null;
  const loader = source.loader;
  if (!loader) return undefined;
  const files = await loader.sanaModel();
  const model = files.known ? files : loader.sanaReported();
  return model?.video ? "video" : (model?.resolution ?? undefined);
}

function allNodes() {
  const graphs = new Set([app.graph, app.canvas?.graph].filter(Boolean));
  return [...graphs].flatMap((g) => g._nodes ?? g.nodes ?? []);
}

function refreshReadouts() {
  for (const n of allNodes()) n.sanaUpdate?.();
}

function setupEmptyLatent(node) {
  let asked = 0;  // only the newest answer is shown
  const update = async () => {
    const w = widget(node, "width")?.value, h = widget(node, "height")?.value;
    const binning = widget(node, "resolution_binning")?.value;
    const mine = ++asked;
    let text;
    try {
      const resolution = await modelResolution(node);
      text = resolution === "video" ? VIDEO_MODEL : resolution === undefined && binning ? UNKNOWN_TABLE
        : readoutText(await binReadout(w, h, binning, resolution ?? null));
    } catch (e) {
      text = `⚠ ${e.message}`;
    }
    if (mine !== asked) return;
    node.sanaReadout = text;
    readout.show(text);
  };
  const refresh = () => (node.sanaPending = update());  // tests await node.sanaPending
  let presetting = false;
  for (const name of ["width", "height", "resolution_binning"]) {
    const w = widget(node, name);
    if (!w) continue;
    chain(w, "callback", () => {
      if (!presetting && name !== "resolution_binning") setWidget(node, preset, "custom");  // a manual edit
      refresh();
    });
  }
  const preset = node.addWidget("combo", "aspect_preset", "custom", (value) => {
    if (value === "custom") return;
    node.sanaPending = (async () => {
      const w = widget(node, "width"), h = widget(node, "height");
      const resolution = await modelResolution(node);
      const size = await presetSize(value, w.value, h.value, resolution === "video" ? null : resolution ?? null);
      if (preset.value !== value) return;  // changed meanwhile
      presetting = true;
      try {
        setWidget(node, w, size.width);
        setWidget(node, h, size.height);
      } finally {
        presetting = false;
      }
      await update();
    })().catch((e) => readout.show(`⚠ ${e.message}`));
  }, { values: ASPECT_PRESETS, serialize: false });
  preset.serialize = false;  // UI only: never in widgets_values nor in the prompt
  const readout = addTextWidget(node, "sana_readout");  // after the node's own widgets: saved values keep their order
  node.sanaUpdate = refresh;
  chain(node, "onConnectionsChange", refresh);
  queueMicrotask(refresh);
}

app.registerExtension({
  name: "sana.comfyui.helpers",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const setup = nodeData.name === "SanaEmptyLatent" ? setupEmptyLatent
      : LOADERS.includes(nodeData.name) ? setupLoader : null;
    if (!setup) return;
    chain(nodeType.prototype, "onNodeCreated", function () { setup(this, nodeData.name); });
    chain(nodeType.prototype, "onAfterGraphConfigured", function () { (this.sanaUpdate ?? this.sanaRefresh)?.(); });
    if (setup === setupLoader) {
      chain(nodeType.prototype, "onExecuted", function (message) {
        const model = message?.sana_model?.[0];  // {variant, resolution, dtype, params} from the transformer loaders
        this.sanaRan = { key: loaderKey(this), lines: message?.text ?? [], resolution: model?.resolution ?? null,
                         video: model?.video ?? false };
        this.sanaFiles = null;  // read the files again when next asked
        this.sanaRefresh();
      });
    }
  },
});
