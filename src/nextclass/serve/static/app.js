// nextclass web page: plain JS, no build step. One request per image (the server micro-batches them).
"use strict";
const $ = (sel) => document.querySelector(sel);
let explainAvailable = false;
let neighborsAvailable = false;
let multiLabel = false;  // one sigmoid per label: each image gets the labels at or above their thresholds

// The bundle's test accuracy with its 95% Wilson interval; val (named as such) when it has no test number.
function headline(h) {
  if (!h || h.accuracy === null || h.accuracy === undefined) return "";
  const pct = (v) => (100 * v).toFixed(1);
  const ci = h.ci ? ` (95% CI ${pct(h.ci[0])}\u2013${pct(h.ci[1])}%${h.n ? `, n=${h.n}` : ""})` : "";
  const note = h.split === "test" ? "" : " · no test number in this bundle";
  return ` · ${h.split} accuracy ${pct(h.accuracy)}%${ci}${note}`;
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models");
    const m = (await r.json()).models[0];
    const version = m.version ? ` ${m.version}` : "";
    const th = m.abstain && m.abstain.threshold !== null && m.abstain.threshold !== undefined
      ? ` · abstains below ${m.abstain.score} ${m.abstain.threshold.toFixed(3)}` : "";
    multiLabel = m.task === "multi-label";
    const kind = multiLabel
      ? `${m.classes.length} labels (multi-label${m.multilabel && m.multilabel.rule ? `, thresholds ${m.multilabel.rule}` : ""})`
      : `${m.classes.length} classes`;
    $("#model-info").textContent = `${m.name}${version} · ${m.arch || "model"} · ${kind} · backend ${m.backend}` +
      headline(m.headline) + th;
    $("#topk-option").hidden = multiLabel;  // a multi-label answer is every label above its threshold, not a top-k
    neighborsAvailable = !!m.neighbors;
    $("#neighbors-option").hidden = !neighborsAvailable;
    explainAvailable = !!m.explain;
    $("#explain-option").hidden = !explainAvailable;
    document.body.dataset.ready = "1";
  } catch (e) {
    $("#model-info").textContent = "cannot reach the model: " + e;
  }
}

function showError(card, text) {
  const el = card.querySelector(".error");
  el.hidden = false;
  el.textContent = text;
  card.querySelector(".label").textContent = "unreadable";
  card.classList.add("failed");
}

function showNeighbors(card, neighbors) {
  if (!neighbors || !neighbors.length) return;
  const box = card.querySelector(".neighbors");
  const strip = box.querySelector(".strip");
  for (const n of neighbors) {
    const fig = document.createElement("figure");
    fig.className = "neighbor";
    const cap = document.createElement("figcaption");
    cap.textContent = `${n.label} · d ${n.distance.toFixed(3)}`;
    if (n.thumbnail) {  // a bundle trained with --no-neighbor-thumbnails keeps no pictures of its training data
      const img = document.createElement("img");
      img.src = n.thumbnail;
      img.alt = n.id;
      img.title = n.id;
      fig.append(img);
    } else {
      cap.title = n.id;
    }
    fig.append(cap);
    strip.appendChild(fig);
  }
  box.hidden = false;
}

function showUnfamiliar(card, res) {
  if (!res.unfamiliar) return;
  card.classList.add("unfamiliar-image");
  const un = card.querySelector(".unfamiliar");
  un.textContent = "unfamiliar: farther from every training image than 95% of the validation images were";
  un.hidden = false;
}

// One bar per (label, probability) pair: the top-k of a class, or the labels above their thresholds.
function showBars(card, items) {
  const ol = card.querySelector(".bars");
  for (const t of items) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = t.label;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = (100 * t.probability).toFixed(1) + "%";
    bar.appendChild(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = (100 * t.probability).toFixed(1) + "%";
    li.append(name, bar, pct);
    ol.appendChild(li);
  }
}

// A multi-label answer: the labels at or above their thresholds (most probable first), never one top-1 class.
function showLabels(card, res) {
  const names = res.labels.map((t) => t.label);
  card.querySelector(".label").textContent = names.length ? names.join(", ") : "no label above its threshold";
  card.dataset.labels = JSON.stringify(names);
  if (!names.length) card.classList.add("no-label");
  showUnfamiliar(card, res);
  showNeighbors(card, res.neighbors);
  showBars(card, res.labels);
  card.classList.add("done");
}

function showResult(card, res) {
  if (res.labels !== undefined) return showLabels(card, res);
  card.querySelector(".label").textContent = res.label;
  card.dataset.label = res.label;
  if (res.abstained) {
    card.classList.add("abstained");
    const ab = card.querySelector(".abstain");
    ab.textContent = `not sure: confidence below the abstain threshold (best guess: ${res.label})`;
    ab.hidden = false;
  }
  showUnfamiliar(card, res);
  showNeighbors(card, res.neighbors);
  showBars(card, res.topk);
  card.classList.add("done");
}

async function explain(card, file) {
  const fd = new FormData();
  fd.append("file", file, file.name);
  const r = await fetch("/v1/explain", { method: "POST", body: fd });
  if (!r.ok) return;
  const img = card.querySelector(".cam");
  img.src = URL.createObjectURL(await r.blob());
  img.hidden = false;
}

async function classify(file) {
  const card = $("#card").content.firstElementChild.cloneNode(true);
  card.querySelector(".file").textContent = file.name;
  const thumb = card.querySelector(".thumb");
  thumb.onerror = () => { thumb.style.visibility = "hidden"; };  // not an image the browser can show
  thumb.src = URL.createObjectURL(file);
  card.querySelector(".thumb").alt = file.name;
  $("#results").prepend(card);
  const fd = new FormData();
  fd.append("files", file, file.name);
  const k = Math.max(1, parseInt($("#topk").value, 10) || 5);
  try {
    const nb = neighborsAvailable ? Math.max(0, parseInt($("#neighbors").value, 10) || 0) : 0;
    const query = (multiLabel ? [] : [`topk=${k}`]).concat(nb ? [`neighbors=${nb}`] : []);
    const r = await fetch("/v1/predict" + (query.length ? "?" + query.join("&") : ""), { method: "POST", body: fd });
    const body = await r.json();
    if (!r.ok) return showError(card, `${r.status}: ${body.detail || r.statusText}`);
    if (body.results[0].error) return showError(card, body.results[0].error);
    showResult(card, body.results[0]);
    if (explainAvailable && $("#explain").checked) await explain(card, file);
  } catch (e) {
    showError(card, String(e));
  }
}

function handle(files) {
  for (const f of files) classify(f);
}

function init() {
  const drop = $("#drop");
  $("#picker").addEventListener("change", (e) => { handle(e.target.files); e.target.value = ""; });
  for (const ev of ["dragenter", "dragover"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const ev of ["dragleave", "drop"]) drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  drop.addEventListener("drop", (e) => handle(e.dataTransfer.files));
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("#picker").click(); });
  $("#clear").addEventListener("click", () => { $("#results").innerHTML = ""; });
  loadModel();
}

init();
