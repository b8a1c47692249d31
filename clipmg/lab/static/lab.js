// clipmg lab: the page. Plain JavaScript over the JSON API of clipmg/lab/server.py.
"use strict";
const $ = (id) => document.getElementById(id);
const HEADLINE = [["top1", "top-1"], ["top5", "top-5"], ["balanced_accuracy", "balanced accuracy"],
  ["macro_f1", "macro-F1"], ["clip_top1", "clip top-1"]];
let state = null;
let sequence = 0;  // the latest prompt update sent: older answers are dropped
let timer = null;
let selected = null;  // the confusion cell whose mistakes are shown: [true, pred]

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}
function fmt(value, digits = 3) { return value === null || value === undefined ? "n/a" : Number(value).toFixed(digits); }
function status(text, error = false) { $("status").textContent = text; $("status").className = error ? "status error" : "status"; }

async function call(url, body) {
  const options = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify(body)};
  const response = await fetch(url, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function render(next) {
  const before = state;
  state = next;
  const m = state.metrics;
  $("meta").innerHTML = `checkpoint <code>${esc(state.checkpoint)}</code> &middot; ${state.n_frames} frames of ` +
    `<code>${esc(state.frames)}</code>` + (state.n_skipped ? ` &middot; ${state.n_skipped} unreadable left out` : "") +
    ` &middot; prompt set <b id="set-name">${esc(state.prompts.name)}</b>`;
  $("cards").innerHTML = HEADLINE.filter(([k]) => k in m).map(([k, label]) =>
    `<div class="card"><div class="v" data-metric="${k}">${fmt(m[k])}</div><div class="k">${label}</div></div>`).join("");
  const sets = $("set-select");
  if (sets.options.length !== state.sets.length) {
    sets.innerHTML = state.sets.map((s) => `<option>${esc(s)}</option>`).join("");
  }
  const templates = state.prompts.templates.join("\n");
  if (document.activeElement !== $("templates")) $("templates").value = templates;
  renderClasses(before);
  renderConfusion();
}

function renderClasses(before) {
  const body = $("classes").tBodies[0];
  const fresh = body.rows.length !== state.prompts.classes.length;
  if (fresh) {
    body.innerHTML = state.prompts.classes.map((c) => `<tr class="class-row"><td>${c.id}</td><td>${esc(c.name)}</td>` +
      `<td><input class="subject" data-class="${c.id}" spellcheck="false"></td>` +
      `<td class="bar-cell"><div class="bar"><span></span></div></td><td class="recall num" data-class="${c.id}"></td>` +
      `<td class="support num" data-class="${c.id}"></td></tr>`).join("");
    body.querySelectorAll("input.subject").forEach((input) => input.addEventListener("input", schedule));
  }
  state.prompts.classes.forEach((c, i) => {
    const row = body.rows[i], report = state.per_class[i];
    const input = row.querySelector("input.subject");
    if (document.activeElement !== input) input.value = c.subject;
    input.title = c.texts.join("\n");
    const cell = row.querySelector("td.recall");
    const text = fmt(report.recall);
    cell.classList.toggle("changed", !fresh && before && cell.textContent !== text);
    cell.textContent = text;
    row.querySelector(".bar span").style.width = `${Math.round(100 * (report.recall || 0))}%`;
    row.querySelector("td.support").textContent = report.support;
  });
}

function heat(rate) {
  const mix = (a, b) => Math.round(a + (b - a) * rate);
  return `background:rgb(${mix(255, 8)},${mix(255, 69)},${mix(255, 148)});color:${rate > 0.5 ? "#fff" : "#1d232b"}`;
}

function renderConfusion() {
  const cm = state.confusion, classes = state.prompts.classes;
  const head = "<tr><th></th>" + classes.map((c) => `<th title="${esc(c.name)}">${c.id}</th>`).join("") + "</tr>";
  const rows = cm.map((row, i) => {
    const support = row.reduce((a, b) => a + b, 0);
    return `<tr><th title="${esc(classes[i].name)}">${classes[i].id} ${esc(classes[i].name.slice(0, 24))}</th>` +
      row.map((count, j) => `<td class="${i === j ? "diag" : ""}" data-true="${i}" data-pred="${j}" data-count="${count}" ` +
        `style="${heat(support ? count / support : 0)}" title="true ${esc(classes[i].name)} → predicted ` +
        `${esc(classes[j].name)}: ${count}">${count || ""}</td>`).join("") + "</tr>";
  }).join("");
  $("confusion").innerHTML = `<table class="heat">${head}${rows}</table>`;
  $("confusion").querySelectorAll("td").forEach((td) => {
    const t = Number(td.dataset.true), p = Number(td.dataset.pred);
    if (selected && selected[0] === t && selected[1] === p) td.classList.add("selected");
    td.addEventListener("click", () => {
      $("confusion").querySelectorAll("td.selected").forEach((x) => x.classList.remove("selected"));
      td.classList.add("selected");
      selected = [t, p];
      showMistakes(t, t === p ? null : p);
    });
  });
}

// What depends on the prompts besides the table and the matrix: the shown mistakes and clips.
function refresh() {
  if (selected) showMistakes(selected[0], selected[0] === selected[1] ? null : selected[1]);
  loadClips();
}

function figure(frame, score) {
  const pred = frame.pred ? `${frame.pred.id} ${esc(frame.pred.name)} ${fmt(frame.prob, 2)}` : "";
  const truth = frame.true ? `${frame.true.id} ${esc(frame.true.name)}` : "unlabelled";
  const extra = score === undefined ? "" : `<div class="s">score ${fmt(score, 3)}</div>`;
  return `<figure class="frame ${frame.correct ? "right" : "wrong"}" data-index="${frame.index}" ` +
    `data-true="${frame.true ? frame.true.index : -1}" data-pred="${frame.pred ? frame.pred.index : -1}">` +
    `<img loading="lazy" src="/thumb/${frame.index}" alt="${esc(frame.path)}" title="${esc(frame.path)} (row ${frame.row})">` +
    `<figcaption><div class="t">true ${truth}</div><div class="p">pred ${pred}</div>${extra}</figcaption></figure>`;
}

function gallery(id, frames, withScore) {
  $(id).innerHTML = frames.map((f) => figure(f, withScore ? f.score : undefined)).join("") || "<p class=\"meta\">none</p>";
  $(id).querySelectorAll("figure").forEach((el) => el.addEventListener("click", () => showSimilar(el.dataset.index)));
}

async function showMistakes(t, p) {
  try {
    const data = await call(`/api/mistakes?true=${t}` + (p === null ? "" : `&pred=${p}`));
    const what = p === null ? `${data.true.id} ${data.true.name}, any wrong class` :
      `true ${data.true.id} ${data.true.name} → predicted ${data.pred.id} ${data.pred.name}`;
    $("mistakes-title").textContent = `Mistakes: ${what} (${data.frames.length} shown of ${data.count})`;
    gallery("mistakes", data.frames, false);
  } catch (error) { status(error.message, true); }
}

async function showSimilar(index) {
  try {
    const data = await call(`/api/similar/${index}`);
    const top = data.top.map((c) => `${c.id} ${esc(c.name)} ${fmt(c.prob, 2)}`).join(" &middot; ");
    $("similar-head").innerHTML = figure(data.frame) + `<p class="meta">top-5: ${top}</p>`;
    gallery("similar", data.nearest, true);
  } catch (error) { status(error.message, true); }
}

function subjects() {
  const out = {};
  document.querySelectorAll("input.subject").forEach((input) => { out[input.dataset.class] = input.value; });
  return out;
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(update, 300);
}

async function update() {
  const mine = ++sequence;
  const templates = $("templates").value.split("\n").map((t) => t.trim()).filter((t) => t);
  const started = performance.now();
  status("scoring…");
  try {
    const data = await call("/api/prompts", {templates, subjects: subjects()});
    if (mine !== sequence) return;
    render(data);
    refresh();
    status(`metrics updated in ${Math.round(performance.now() - started)} ms (${data.encoded_texts} new texts encoded)`);
  } catch (error) { if (mine === sequence) status(error.message, true); }
}

async function loadSet() {
  const name = $("set-select").value;
  try {
    render(await call("/api/prompts/load", {name}));
    refresh();
    status(`loaded ${name}`);
  } catch (error) { status(error.message, true); }
}

async function saveSet() {
  try {
    const files = await call("/api/prompts/save", {name: $("save-name").value});
    render(await call("/api/state"));
    status(`saved ${files.prompts} (metrics in ${files.metrics})`);
  } catch (error) { status(error.message, true); }
}

async function search(event) {
  event.preventDefault();
  try {
    const data = await call(`/api/search?q=${encodeURIComponent($("search-input").value)}&k=24`);
    gallery("search-results", data.frames, true);
  } catch (error) { status(error.message, true); }
}

let clips = [];
async function loadClips() {
  try {
    clips = (await call("/api/clips")).clips;
    fillClips();
  } catch (error) { status(error.message, true); }
}
function fillClips() {
  const wrong = $("clip-wrong").checked, current = $("clip-select").value;
  $("clip-select").innerHTML = clips.filter((c) => !wrong || !c.correct).map((c) =>
    `<option value="${esc(c.video_id)}">${esc(c.video_id)} (${c.frames} frames, true ${c.true ? c.true.id : "?"}, ` +
    `pred ${c.pred.id}${c.correct ? "" : " ✗"})</option>`).join("");
  if (clips.some((c) => c.video_id === current)) $("clip-select").value = current;
  showClip();
}
async function showClip() {
  const id = $("clip-select").value;
  if (!id) { $("clip").innerHTML = ""; $("clip-head").innerHTML = ""; return; }
  try {
    const data = await call(`/api/clip?id=${encodeURIComponent(id)}`);
    const top = data.top.map((c) => `${c.id} ${esc(c.name)} ${fmt(c.prob, 2)}`).join(" &middot; ");
    $("clip-head").innerHTML = `<p class="meta">clip ${esc(data.video_id)}, true ${data.true ? data.true.id + " " +
      esc(data.true.name) : "?"}; clip prediction (mean of its frames' logits): ${top}</p>`;
    gallery("clip", data.frames, false);
  } catch (error) { status(error.message, true); }
}

async function start() {
  $("templates").addEventListener("input", schedule);
  $("load-set").addEventListener("click", loadSet);
  $("save-set").addEventListener("click", saveSet);
  $("search-form").addEventListener("submit", search);
  $("clip-select").addEventListener("change", showClip);
  $("clip-wrong").addEventListener("change", fillClips);
  try {
    render(await call("/api/state"));
    status(`ready: features ${state.features.from_cache ? "read from" : "encoded into"} ${state.features.cache || "memory"}`);
    document.body.dataset.ready = "1";
    await loadClips();
  } catch (error) { status(error.message, true); }
}
start();
