// kdcicam app: upload photos, look at the heatmap and the boxes, move the threshold, download the boxes.
// The server sends, per image and per top-k class, the boxes at every slider threshold (computed by the
// evaluator's own rule); the slider and the class selector only pick from them and redraw.
"use strict";

const PRED_COLOR = "rgb(255, 40, 40)";
const state = { config: null, images: [], nextId: 1, busy: false };
const $ = (id) => document.getElementById(id);

function megabytes(n) { return (n / (1024 * 1024)).toFixed(1) + " MB"; }

function showMessage(text) {
  const li = document.createElement("li");
  li.textContent = text;
  $("messages").appendChild(li);
}

function setStatus(text) { $("status").textContent = text; }

function thresholdIndex() { return Number($("threshold").value); }

function currentThreshold() { return state.config.thresholds[thresholdIndex()]; }

function formatThreshold(t) { return Number(t.toFixed(4)).toString(); }

function boxesOf(item) { return item.data.classes[item.rank].boxes[thresholdIndex()]; }

function updateButtons() {
  const have = state.images.length > 0;
  for (const id of ["download-json", "download-coco", "clear"]) $(id).disabled = !have || state.busy;
  $("files").disabled = state.busy;
}

function draw(item) {
  const { canvas, photo, heatmaps, data } = item;
  if (!photo.complete || photo.naturalWidth === 0) return;
  const cw = photo.naturalWidth, ch = photo.naturalHeight;
  if (canvas.width !== cw) canvas.width = cw;
  if (canvas.height !== ch) canvas.height = ch;
  const ctx = canvas.getContext("2d");
  ctx.globalAlpha = 1;
  ctx.drawImage(photo, 0, 0, cw, ch);
  const heat = heatmaps[item.rank];
  if ($("show-heatmap").checked && heat.complete && heat.naturalWidth > 0) {
    ctx.globalAlpha = 0.5;  // the blend of kdcicam localize's overlays
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(heat, 0, 0, cw, ch);
    ctx.globalAlpha = 1;
  }
  const cls = data.classes[item.rank];
  const boxes = boxesOf(item);
  const sx = cw / data.width, sy = ch / data.height;
  const line = Math.max(2, Math.round(Math.min(cw, ch) / 120));
  ctx.lineWidth = line;
  ctx.strokeStyle = PRED_COLOR;
  ctx.font = `${Math.max(12, Math.round(Math.min(cw, ch) / 22))}px sans-serif`;
  ctx.textBaseline = "top";
  boxes.forEach(([x0, y0, x1, y1], i) => {
    ctx.strokeRect(x0 * sx + line / 2, y0 * sy + line / 2, Math.max(0, (x1 - x0) * sx - line), Math.max(0, (y1 - y0) * sy - line));
    if (i === 0) {
      const text = `${cls.class_name} ${cls.score.toFixed(2)}`;
      const tw = ctx.measureText(text).width + 6, th = parseInt(ctx.font, 10) + 6;
      const ty = y0 * sy - th >= 0 ? y0 * sy - th : y0 * sy + line;
      const tx = Math.min(Math.max(0, x0 * sx), Math.max(0, cw - tw));
      ctx.fillStyle = PRED_COLOR;
      ctx.fillRect(tx, ty, tw, th);
      ctx.fillStyle = "black";
      ctx.fillText(text, tx + 3, ty + 3);
    }
  });
  canvas.dataset.boxes = JSON.stringify(boxes);
  item.mapKind.textContent = `map: ${cls.map}`;
  item.boxList.textContent = boxes.length === 0
    ? `no box at threshold ${formatThreshold(currentThreshold())}`
    : boxes.map((b) => `[${b.join(", ")}]`).join("  ") + ` (x0, y0, x1, y1 in the photo's ${data.width} × ${data.height} pixels)`;
}

function drawAll() { state.images.forEach(draw); }

function addImage(data) {
  const item = { id: state.nextId++, data, rank: 0 };
  const card = document.createElement("article");
  card.className = "card";
  card.dataset.imageId = String(item.id);
  const title = document.createElement("h2");
  title.textContent = `${item.id}. ${data.name} (${data.width} × ${data.height})`;
  const canvas = document.createElement("canvas");
  canvas.className = "view";
  const select = document.createElement("select");
  select.className = "class-select";
  select.setAttribute("aria-label", "class");
  data.classes.forEach((c, i) => {
    const option = document.createElement("option");
    option.value = String(i);
    option.textContent = `${c.rank}. ${c.class_name} (${(100 * c.score).toFixed(1)} %)`;
    select.appendChild(option);
  });
  select.addEventListener("change", () => { item.rank = Number(select.value); draw(item); });
  const mapKind = document.createElement("p");
  mapKind.className = "map-kind";
  const boxList = document.createElement("p");
  boxList.className = "box-list";
  card.append(title, canvas, select, mapKind, boxList);
  $("results").appendChild(card);
  Object.assign(item, { card, canvas, mapKind, boxList, photo: new Image(), heatmaps: [] });
  item.photo.onload = () => draw(item);
  item.photo.src = data.preview;
  item.heatmaps = data.classes.map((c) => {
    const im = new Image();
    im.onload = () => draw(item);
    im.src = c.heatmap;
    return im;
  });
  state.images.push(item);
}

async function readError(resp, fallback) {
  try {
    const body = await resp.json();
    if (body && body.error) return body.error;
  } catch (e) { /* not JSON */ }
  return `${fallback}: HTTP ${resp.status}`;
}

async function uploadFiles(files) {
  const cfg = state.config;
  $("messages").replaceChildren();
  state.busy = true;
  updateButtons();
  try {
    let n = 0;
    for (const file of files) {
      n += 1;
      if (file.size > cfg.max_bytes) {  // the server refuses it too; no need to send it
        showMessage(`${file.name}: ${megabytes(file.size)} is over the upload limit of ${megabytes(cfg.max_bytes)} (kdcicam app --max-upload-mb)`);
        continue;
      }
      setStatus(`localizing ${file.name} (${n} of ${files.length})…`);
      let resp;
      try {
        resp = await fetch(`/api/localize?name=${encodeURIComponent(file.name)}`,
          { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
      } catch (e) {
        showMessage(`${file.name}: the server did not answer (${e.message}); is kdcicam app still running?`);
        continue;
      }
      if (!resp.ok) {
        showMessage(await readError(resp, file.name));
        continue;
      }
      addImage(await resp.json());
    }
    setStatus(`${state.images.length} photo(s) shown`);
  } finally {
    state.busy = false;
    updateButtons();
  }
}

function filenameOf(resp, fallback) {
  const m = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "");
  return m ? m[1] : fallback;
}

async function download(format) {
  const body = {
    threshold: currentThreshold(),
    images: state.images.map((item) => {
      const c = item.data.classes[item.rank];
      return { image_id: item.id, file: item.data.name, width: item.data.width, height: item.data.height,
               class_id: c.class_id, score: c.score, boxes: boxesOf(item) };
    }),
  };
  let resp;
  try {
    resp = await fetch(`/api/export?format=${format}`,
      { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  } catch (e) {
    showMessage(`download: the server did not answer (${e.message})`);
    return;
  }
  if (!resp.ok) {
    showMessage(await readError(resp, "download"));
    return;
  }
  const url = URL.createObjectURL(await resp.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filenameOf(resp, `kdcicam_${format}.json`);
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
  setStatus(`downloaded ${a.download} (threshold ${formatThreshold(body.threshold)}, ${body.images.length} photo(s))`);
}

function showThreshold() {
  const cfg = state.config;
  const t = currentThreshold();
  $("threshold-value").textContent = formatThreshold(t);
  $("reset-threshold").disabled = thresholdIndex() === cfg.default_index;
}

async function init() {
  let cfg;
  try {
    const resp = await fetch("/api/config");
    cfg = await resp.json();
  } catch (e) {
    $("about").textContent = `cannot reach the server (${e.message})`;
    return;
  }
  state.config = cfg;
  $("about").textContent = `${cfg.method} · ${cfg.checkpoint} · ${cfg.num_classes} classes · map: ${cfg.map_kind}` +
    ` · threshold ${formatThreshold(cfg.threshold)} from ${cfg.threshold_source}` +
    ` · uploads up to ${megabytes(cfg.max_bytes)} and ${(cfg.max_pixels / 1e6).toFixed(0)} MP`;
  const slider = $("threshold");
  slider.max = String(cfg.thresholds.length - 1);
  slider.value = String(cfg.default_index);
  slider.disabled = false;
  $("reset-threshold").textContent = `chosen on val (${formatThreshold(cfg.threshold)})`;
  showThreshold();
  slider.addEventListener("input", () => { showThreshold(); drawAll(); });
  $("reset-threshold").addEventListener("click", () => { slider.value = String(cfg.default_index); showThreshold(); drawAll(); });
  $("show-heatmap").addEventListener("change", drawAll);
  $("files").addEventListener("change", async (ev) => {
    const files = Array.from(ev.target.files || []);
    if (files.length) await uploadFiles(files);
    ev.target.value = "";
  });
  $("download-json").addEventListener("click", () => download("json"));
  $("download-coco").addEventListener("click", () => download("coco"));
  $("clear").addEventListener("click", () => {
    state.images = [];
    state.nextId = 1;
    $("results").replaceChildren();
    $("messages").replaceChildren();
    setStatus("");
    updateButtons();
  });
  document.body.dataset.ready = "1";
}

init();
