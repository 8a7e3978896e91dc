// bitsearch search page: plain JS, no build step. Text goes in via textContent only (no HTML injection).
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORE = "bitsearch-api-key";
let apiKey = sessionStorage.getItem(KEY_STORE) || "";

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  if (apiKey) h["Authorization"] = "Bearer " + apiKey;
  return h;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n), u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
  return (u === 0 ? v.toFixed(0) : v.toFixed(v < 10 ? 2 : 1)) + " " + units[u];
}

function ms(seconds) {
  const v = seconds * 1000;
  return (v < 1 ? v.toFixed(3) : v < 10 ? v.toFixed(2) : v.toFixed(1)) + " ms";
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function bar(name, value, max, label, fillClass) {
  const row = el("div", "bar");
  row.dataset.name = name;
  row.append(el("span", "name", name));
  const track = el("span", "track");
  const fill = el("span", "fill" + (fillClass ? " " + fillClass : ""));
  fill.style.width = (max > 0 ? Math.max(0.3, (100 * value) / max) : 0) + "%";
  fill.style.display = "block";
  track.append(fill);
  row.append(track, el("span", "value", label));
  return row;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function call(path, options) {
  const resp = await fetch(path, options);
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (resp.status === 401) {
    $("auth").hidden = false;
    $("api-key").focus();
    throw new Error('This server needs an API key: enter it in the "API key" field.');
  }
  if (!resp.ok) throw new Error((body && body.detail) || resp.status + " " + resp.statusText);
  return body;
}

async function loadInfo() {
  try {
    const info = await call("/info", { headers: headers(false) });
    const stages = info.stages || {};
    const stage1 = stages[info.precision] || {};
    const ram = stage1.ram_bytes || 0;
    const f32 = info.float32_bytes || 0;
    const ratio = info.compression_vs_float32;
    const model = info.model && info.model.name ? info.model.name : "no model recorded (vector queries only)";
    $("memory-text").textContent =
      info.documents.toLocaleString() + " documents · " + info.dim + " dims · " + info.precision +
      " codes · model " + model + " — " + bytes(ram) + " in RAM vs " + bytes(f32) + " as float32" +
      (ratio ? " (" + ratio.toFixed(1) + "× smaller)" : "");
    const bars = $("memory-bars");
    bars.replaceChildren(
      bar(info.precision + " codes in RAM", ram, Math.max(ram, f32), bytes(ram), "bits"),
      bar("float32 would need", f32, Math.max(ram, f32), bytes(f32), "f32"),
    );
    if (stages.int8 && info.precision !== "int8") {
      bars.append(bar("int8 rows on disk", stages.int8.disk_bytes, Math.max(ram, f32), bytes(stages.int8.disk_bytes)));
    }
    const options = (info.server && info.server.search_options) || [];
    $("mode-label").hidden = !options.includes("mode");
    $("memory").dataset.loaded = "1";
  } catch (e) {
    $("memory-text").textContent = "Collection info unavailable: " + e.message;
  }
}

function renderTimings(timings, stages) {
  const entries = Object.entries(timings).filter(([name]) => name !== "total");
  const total = timings.total || entries.reduce((s, [, v]) => s + v, 0);
  const max = Math.max(...entries.map(([, v]) => v), 1e-9);
  $("timings-text").textContent =
    "Stages " + (stages || []).join(" → ") + " · total " + ms(total) +
    " (" + entries.map(([n, v]) => n + " " + ms(v)).join(", ") + ")";
  $("timing-bars").replaceChildren(...entries.map(([name, v]) => bar(name, v, max, ms(v))));
  $("timings").hidden = false;
}

function renderHits(hits) {
  const list = $("results");
  list.replaceChildren();
  if (!hits.length) {
    list.append(el("li", "empty", "No results."));
    return;
  }
  hits.forEach((hit, i) => {
    const li = el("li", "hit");
    const head = el("div", "hit-head");
    head.append(el("span", "rank", String(i + 1)), el("span", "doc-id", String(hit.id)),
      el("span", "score", hit.score.toFixed(4)));
    li.append(head);
    if (hit.text) {
      const text = hit.text.length > 360 ? hit.text.slice(0, 360).trimEnd() + "…" : hit.text;
      li.append(el("div", "snippet", text));
    }
    if (hit.metadata && Object.keys(hit.metadata).length) {
      li.append(el("div", "meta", JSON.stringify(hit.metadata)));
    }
    list.append(li);
  });
}

async function search(event) {
  event.preventDefault();
  const query = $("query").value.trim();
  if (!query) return;
  const body = {
    query: query,
    k: Number($("k").value) || 10,
    rescore: $("rescore").value,
    rescore_multiplier: Number($("multiplier").value) || 4,
  };
  if (!$("mode-label").hidden && $("mode").value !== "dense") body.mode = $("mode").value;
  $("go").disabled = true;
  showError("");
  const t0 = performance.now();
  try {
    const data = await call("/search", { method: "POST", headers: headers(true), body: JSON.stringify(body) });
    const roundTrip = (performance.now() - t0) / 1000;
    renderHits(data.results[0] || []);
    $("notice").textContent = (data.warnings || []).join(" · ");
    $("notice").hidden = !(data.warnings || []).length;
    renderTimings(data.timings, data.stages);
    $("timings-text").textContent += " · round trip " + ms(roundTrip);
    document.body.dataset.searched = String(Number(document.body.dataset.searched || 0) + 1);
  } catch (e) {
    // the results on screen belong to an earlier query: never leave them beside this query's error
    $("results").replaceChildren();
    $("timings").hidden = true;
    $("notice").hidden = true;
    showError(e.message);
  } finally {
    $("go").disabled = false;
  }
}

$("search-form").addEventListener("submit", search);
$("auth").addEventListener("submit", (event) => {
  event.preventDefault();
  apiKey = $("api-key").value.trim();
  sessionStorage.setItem(KEY_STORE, apiKey);
  $("auth").hidden = true;
  showError("");
  loadInfo();
});
loadInfo();
