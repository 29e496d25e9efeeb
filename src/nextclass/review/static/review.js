// nextclass review: one item at a time, a decision per click or key, each saved before the page moves on.
// Plain JS, no build step. Everything shown comes from GET /v1/review; images by opaque id from /v1/images/ID.
"use strict";

const $ = (id) => document.getElementById(id);
const S = { data: null, pos: 0, target: {} };  // target: item id -> chosen "duplicate of" image id

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}
const imgUrl = (id, size) => `/v1/images/${encodeURIComponent(id)}?size=${size}`;
const pct = (p) => (p == null ? "?" : p < 0.01 ? `${(100 * p).toPrecision(2)}%` : `${(100 * p).toFixed(1)}%`);
const item = () => S.data.items[S.pos];
const decisionOf = (it) => S.data.decisions[it.id];

function describe(d) {
  if (!d) return "";
  if (d.decision === "relabel") return `relabel \u2192 ${d.label}`;
  if (d.decision === "duplicate") return `duplicate of ${imageName(d.duplicate_of)}`;
  return d.decision;
}
const imageName = (id) => (S.data.images[id] ? S.data.images[id].file : id);

async function load() {
  const r = await fetch("/v1/review");
  const body = await r.json();
  if (!r.ok) { $("progress").textContent = `error ${r.status}: ${body.detail}`; return; }
  S.data = body;
  S.pos = Math.min(body.start, Math.max(0, body.items.length - 1));
  $("title").textContent = body.title;
  $("corrections").textContent = body.corrections;
  $("notes").replaceChildren(...body.notes.map((n) => el("li", {}, n)));
  const sel = $("relabel-select");
  sel.replaceChildren(...body.classes.map((c) => el("option", { value: c }, c)));
  $("classes").replaceChildren(...body.classes.slice(0, 9).map((c, i) =>
    el("button", { type: "button", class: "cls", "data-class": c, onclick: () => relabel(c) }, `${i + 1} ${c}`)));
  render();
  document.body.dataset.ready = "1";
}

function render() {
  const n = S.data.items.length, done = Object.keys(S.data.decisions).length;
  $("progress").textContent = `${done} of ${n} decided` + (done === n && n ? " \u2014 all done" : "");
  $("empty").hidden = n > 0;
  $("current").hidden = n === 0;
  renderList();
  if (n) renderItem();
}

function renderList() {
  const kids = [];
  let section = null;
  S.data.items.forEach((it, i) => {
    if (it.reason !== section) { section = it.reason; kids.push(el("h2", {}, section)); }
    const d = decisionOf(it);
    kids.push(el("button", { type: "button", class: (i === S.pos ? "here " : "") + (d ? "decided" : ""),
                             "data-item": it.id, title: describe(d) || "undecided", onclick: () => go(i) },
                 el("span", { class: "mark" }, d ? "\u2713" : "\u00b7"), el("span", { class: "name" }, it.image.file)));
  });
  $("list").replaceChildren(...kids);
  const here = $("list").querySelector(".here");
  if (here) here.scrollIntoView({ block: "nearest" });
}

function renderItem() {
  const it = item(), d = decisionOf(it);
  $("picture").src = it.image.served ? imgUrl(it.image.id, 512) : "";
  $("picture").alt = it.image.served ? it.image.file : "not shown (outside the data folder, or missing)";
  $("file").textContent = `${it.image.file}` + (it.image.split ? ` \u00b7 ${it.image.split}` : "");
  $("given").textContent = it.image.label != null ? `labelled ${it.image.label}` : "unlabelled";
  $("reasons").replaceChildren(...it.reasons.map((r) => el("span", {}, r)));
  $("decision").textContent = d ? `decided: ${describe(d)}` : "undecided";
  $("decision").className = "decision" + (d ? " saved" : "");
  const target = S.target[it.id] || it.duplicate_of;
  $("duplicate").disabled = !target;
  $("dup-target").textContent = target ? imageName(target) : "(click an image of its group)";
  for (const b of document.querySelectorAll("#classes .cls"))
    b.classList.toggle("chosen", !!d && d.decision === "relabel" && d.label === b.dataset.class);
  $("keep").classList.toggle("chosen", !!d && d.decision === "keep");
  $("drop").classList.toggle("chosen", !!d && d.decision === "drop");
  $("duplicate").classList.toggle("chosen", !!d && d.decision === "duplicate");
  const propose = [it.suggested, it.image.label].find((c) => S.data.classes.includes(c));
  $("relabel-select").value = propose ?? S.data.classes[0];
  $("evidence").replaceChildren(...evidence(it));
}

function evidence(it) {
  const out = [], ev = it.evidence;
  const sec = (title, ...kids) => out.push(el("section", {}, el("h3", {}, title), ...kids));
  if (ev["label issue"]) { const e = ev["label issue"];
    sec("Probable label issue", el("p", {}, `labelled ${e.given}, probably ${e.suggested}: the model gives the ` +
        `given label ${pct(e.score)} (rank ${e.rank})`)); }
  if (ev["confident mistake"]) { const e = ev["confident mistake"];
    sec("Confident mistake", el("p", {}, `labelled ${e.given}; the model says ${e.predicted} with ${pct(e.probability)}` +
        (e.topk ? ` (${e.topk.replaceAll(";", ", ")})` : ""))); }
  if (ev.unfamiliar) { const e = ev.unfamiliar;
    sec("Unfamiliar", el("p", {}, `nearest training image at distance ${e.distance}, beyond the bundle's ` +
        `${e.threshold}; the model says ${e.predicted}`)); }
  if (ev.unreadable) sec("Unreadable", el("p", {}, ev.unreadable.why || "cannot be decoded"));
  for (const r of ["leak", "near duplicate"]) if (ev[r]) sec(groupTitle(r, ev[r]), group(it, ev[r]));
  if (ev.suggest) { const e = ev.suggest;
    sec("Suggested for labelling", el("p", {}, `pick ${e.rank}: the model says ${e.predicted} with ` +
        `${pct(e.probability)}; ${e.why}` + (e.unfamiliar ? " (unfamiliar)" : ""))); }
  if (ev.neighbors) sec("Nearest training images of each class", ...Object.entries(ev.neighbors).map(([c, nbs]) =>
    el("div", { class: "classrow" }, el("b", {}, c),
       el("span", { class: "strip" }, ...nbs.map((nb) => el("figure", { title: nb.id },
         nb.thumbnail ? el("img", { src: nb.thumbnail, alt: nb.id }) : null,
         el("figcaption", {}, nb.id.split("/").pop()), el("figcaption", {}, `d ${nb.distance}`)))))));
  return out;
}

function groupTitle(r, e) {
  const what = r === "leak" ? `Leak ${e.pair}: a copy of an earlier split's image` : "Near-duplicate group";
  return `${what} (${e.kind}, ${e.size} images${e.label_conflict ? ", labels disagree" : ""})`;
}

function group(it, e) {
  const target = S.target[it.id] || it.duplicate_of;
  return el("div", { class: "strip" }, ...e.group.map((id) => {
    const self = id === it.image.id;
    const info = S.data.images[id] || {};
    const cap = `${info.label ?? ""} ${info.split ?? ""}`;
    return el("figure", { class: "member" + (self ? " self" : "") + (id === target && !self ? " target" : ""),
                          "data-image": id, title: self ? "this image" : "duplicate of this one",
                          onclick: () => { if (!self) { S.target[it.id] = id; renderItem(); } } },
              el("img", { src: imgUrl(id, 96), alt: info.file || id }), el("figcaption", {}, self ? "this one" : cap));
  }));
}

async function decide(body) {
  const it = item();
  $("status").className = "muted";
  $("status").textContent = "saving\u2026";
  let r, res;
  try {
    r = await fetch("/v1/decisions", { method: "POST", headers: { "Content-Type": "application/json" },
                                       body: JSON.stringify({ item: it.id, ...body }) });
    res = await r.json();
  } catch (e) { r = { ok: false, status: "network" }; res = { detail: String(e) }; }
  if (!r.ok) {
    $("status").className = "error";
    $("status").textContent = `not saved (${r.status}): ${res.detail}`;
    return;
  }
  S.data.decisions[it.id] = res.saved;
  $("status").textContent = `saved: ${it.image.file} \u2192 ${describe(res.saved)}`;
  const next = nextUndecided(S.pos);
  if (next >= 0) S.pos = next;
  render();
}

function nextUndecided(from) {
  const n = S.data.items.length;
  for (let k = 1; k <= n; k++) { const i = (from + k) % n; if (!decisionOf(S.data.items[i])) return i; }
  return -1;
}
function go(i) { S.pos = Math.max(0, Math.min(S.data.items.length - 1, i)); $("status").textContent = ""; render(); }
function relabel(c) { decide({ decision: "relabel", label: c }); }
function duplicate() { const it = item(), t = S.target[it.id] || it.duplicate_of; if (t) decide({ decision: "duplicate", duplicate_of: t }); }

$("keep").addEventListener("click", () => decide({ decision: "keep" }));
$("drop").addEventListener("click", () => decide({ decision: "drop" }));
$("duplicate").addEventListener("click", duplicate);
$("relabel").addEventListener("click", () => relabel($("relabel-select").value));
$("prev").addEventListener("click", () => go(S.pos - 1));
$("next").addEventListener("click", () => go(S.pos + 1));
$("next-undecided").addEventListener("click", () => { const i = nextUndecided(S.pos); if (i >= 0) go(i); });

document.addEventListener("keydown", (e) => {
  if (!S.data || !S.data.items.length || e.ctrlKey || e.metaKey || e.altKey) return;
  if (["SELECT", "INPUT", "TEXTAREA"].includes(document.activeElement.tagName)) return;
  const k = e.key;
  if (k === "k") decide({ decision: "keep" });
  else if (k === "d") decide({ decision: "drop" });
  else if (k === "u") duplicate();
  else if (/^[1-9]$/.test(k) && S.data.classes[+k - 1] !== undefined) relabel(S.data.classes[+k - 1]);
  else if (k === "ArrowLeft" || k === "j") go(S.pos - 1);
  else if (k === "ArrowRight" || k === "l") go(S.pos + 1);
  else if (k === "n") { const i = nextUndecided(S.pos); if (i >= 0) go(i); }
  else return;
  e.preventDefault();
});

load();
