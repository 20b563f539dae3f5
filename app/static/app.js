// modelhouse web page: every call goes through the public API, like any other client.
"use strict";

const $ = (id) => document.getElementById(id);
const pct = (p) => `${(p * 100).toFixed(1)}%`;

function debounce(fn, ms) {
  let timer;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// Calls the API; resolves to the JSON body or throws an Error carrying the API's own message.
async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error(`The service could not be reached (${err.message}).`);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

function showError(task, err) { $(`${task}-error`).textContent = err ? err.message : ""; }

// Answers can arrive out of order (a slow request, or one still in flight when the user clears or
// uploads again): each task shows only the answer to its newest request.
const requestCount = {};
function startRequest(task) { requestCount[task] = (requestCount[task] || 0) + 1; return requestCount[task]; }
function isCurrent(task, ticket) { return requestCount[task] === ticket; }

// Renders [{label, probability}] as labelled bars; `best` marks the winner.
function renderBars(list, rows, best) {
  list.replaceChildren(...rows.map((row) => {
    const li = document.createElement("li");
    if (row.label === best) li.className = "best";
    li.innerHTML = '<span class="label"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>';
    li.querySelector(".label").textContent = row.label;
    li.querySelector(".fill").style.width = pct(row.probability);
    li.querySelector(".pct").textContent = pct(row.probability);
    li.setAttribute("aria-label", `${row.label}: ${pct(row.probability)}`);
    return li;
  }));
}

async function classify(task, path, blob, filename, params) {
  const form = new FormData();
  form.append("file", blob, filename);
  return api(`${path}?${new URLSearchParams(params)}`, { method: "POST", body: form });
}

// ---- tabs (arrow keys move between them, as the ARIA tabs pattern says) ----------------
const onShow = {};
let tabs = [];
function selectTab(tab) {
  for (const t of tabs) {
    const selected = t === tab;
    t.setAttribute("aria-selected", String(selected));
    t.tabIndex = selected ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !selected;
  }
  const name = tab.id.replace("tab-", "");
  if (onShow[name]) onShow[name]();
}
function initTabs() {
  tabs = [...document.querySelectorAll('[role="tab"]')];
  tabs.forEach((tab, i) => {
    tab.addEventListener("click", () => selectTab(tab));
    tab.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
      if (!step) return;
      const next = tabs[(i + step + tabs.length) % tabs.length];
      next.focus();
      selectTab(next);
    });
  });
}

// The task a page of its own serves (set from the registry by addTaskTabs), and its prediction URL: every
// task has the same one.
const taskOf = (panel) => $(panel).dataset.task;
const predictUrl = (task) => `/models/${encodeURIComponent(task)}/predict`;

// ---- digits: drawing canvas --------------------------------------------------------------
const canvas = $("digit-canvas");
const ctx = canvas.getContext("2d");
let drawing = false;
let hasInk = false;

function clearCanvas() {
  startRequest("digits");  // whatever is still in flight answers a drawing that is gone
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  hasInk = false;
  $("digit-verdict").textContent = "Draw something.";
  $("digit-bars").replaceChildren();
  $("digit-seen-figure").hidden = true;
  showError("digits", null);
}

function point(e) {
  const box = canvas.getBoundingClientRect();
  return [(e.clientX - box.left) * canvas.width / box.width, (e.clientY - box.top) * canvas.height / box.height];
}

canvas.addEventListener("pointerdown", (e) => {
  drawing = true;
  canvas.setPointerCapture(e.pointerId);
  const [x, y] = point(e);
  ctx.beginPath();
  ctx.moveTo(x, y);
  ctx.lineTo(x + 0.1, y + 0.1);
  ctx.stroke();
  hasInk = true;
});
canvas.addEventListener("pointermove", (e) => {
  if (!drawing) return;
  const [x, y] = point(e);
  ctx.lineTo(x, y);
  ctx.stroke();
  classifyDrawing();
});
for (const type of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(type, () => { if (drawing) { drawing = false; classifyDrawing(); } });
}

// A 280 px canvas becomes a 20 px digit: a 20 px pen gives MNIST-like 1.5-2 px strokes.
ctx.lineWidth = 20;
ctx.lineCap = "round";
ctx.lineJoin = "round";
ctx.strokeStyle = "#000";
clearCanvas();
$("digit-clear").addEventListener("click", clearCanvas);

const classifyDrawing = debounce(() => {
  if (!hasInk) return;
  const ticket = startRequest("digits");  // taken now: a clear before the blob is ready cancels it
  canvas.toBlob((blob) => showDigits(blob, "drawing.png", ticket), "image/png");
}, 150);

async function showDigits(blob, filename, ticket = startRequest("digits")) {
  if (!isCurrent("digits", ticket)) return;
  try {
    const body = await classify("digits", predictUrl(taskOf("panel-digits")), blob, filename, { top_k: 10, debug: true });
    if (!isCurrent("digits", ticket)) return;
    const prediction = body.predictions[0];
    const byDigit = [...prediction.top].sort((a, b) => Number(a.label) - Number(b.label));
    $("digit-verdict").textContent = `It's a ${prediction.label} (${pct(prediction.confidence)})`;
    renderBars($("digit-bars"), byDigit, prediction.label);
    $("digit-seen").src = prediction.input_image;
    $("digit-seen-figure").hidden = false;
    showError("digits", null);
  } catch (err) {
    if (isCurrent("digits", ticket)) showError("digits", err);
  }
}
$("digit-file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (file) showDigits(file, file.name);
});

// ---- photo tabs: one per image-classification task of the registry -------------------------
async function showPhoto(task, file) {
  const preview = $(`${task}-preview`);
  preview.src = URL.createObjectURL(file);
  preview.alt = `Your photo: ${file.name}`;
  preview.hidden = false;
  $(`${task}-verdict`).textContent = "…";
  const ticket = startRequest(task);
  try {
    const prediction = (await classify(task, predictUrl(task), file, file.name, {})).predictions[0];
    if (!isCurrent(task, ticket)) return;
    const verdict = $(`${task}-verdict`);
    verdict.textContent = `${prediction.label} (${pct(prediction.confidence)})`;
    verdict.classList.toggle("unknown", Boolean(prediction.unknown));
    if (prediction.unknown) verdict.textContent += " — not confidently any class it knows";
    renderBars($(`${task}-bars`), prediction.top, prediction.label);
    showError(task, null);
  } catch (err) {
    if (!isCurrent(task, ticket)) return;
    $(`${task}-verdict`).textContent = "";
    $(`${task}-bars`).replaceChildren();
    showError(task, err);
  }
}

// A tab and panel from the template, with the ids the rest of the page (and its tests) use.
function addPhotoTab(task, title) {
  const panel = $("photo-panel").content.firstElementChild.cloneNode(true);
  panel.id = `panel-${task}`;
  panel.setAttribute("aria-labelledby", `tab-${task}`);
  panel.querySelector("h2").textContent = title;
  const zone = panel.querySelector(".drop");
  panel.querySelector("input").id = `${task}-file`;
  for (const [selector, suffix] of [[".preview", "preview"], [".verdict", "verdict"], [".bars", "bars"], [".error", "error"]]) {
    panel.querySelector(selector).id = `${task}-${suffix}`;
  }
  $("panel-words").before(panel);
  const tab = document.createElement("button");
  Object.assign(tab, { id: `tab-${task}`, textContent: title, tabIndex: -1 });
  tab.setAttribute("role", "tab");
  tab.setAttribute("aria-controls", panel.id);
  tab.setAttribute("aria-selected", "false");
  $("tab-words").before(tab);
  panel.querySelector("input").addEventListener("change", (e) => { if (e.target.files[0]) showPhoto(task, e.target.files[0]); });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files[0]) showPhoto(task, e.dataTransfer.files[0]);
  });
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") zone.querySelector("input").click(); });
}

// Binds the drawing page to the first image task that takes digits, word completion to the first text task,
// and gives every other image task a photo tab: what a task takes decides, never its name.
async function addTaskTabs() {
  try {
    for (const { task, kind, title, input } of (await api("/models")).tasks) {
      if (kind === "text-completion" && !taskOf("panel-words")) $("panel-words").dataset.task = task;
      else if (kind === "image-classification" && input === "digit" && !taskOf("panel-digits")) {
        $("panel-digits").dataset.task = task;
      } else if (kind === "image-classification") addPhotoTab(task, title || task);
    }
  } finally {
    initTabs();
  }
}
addTaskTabs();

// The digits tab takes dropped photos too.
canvas.addEventListener("dragover", (e) => e.preventDefault());
canvas.addEventListener("drop", (e) => {
  e.preventDefault();
  if (e.dataTransfer.files[0]) showDigits(e.dataTransfer.files[0], e.dataTransfer.files[0].name);
});

// ---- word completion ----------------------------------------------------------------------
async function loadRnnVersions() {
  const select = $("words-version");
  if (select.options.length) return;
  try {
    const task = await api(`/models/${encodeURIComponent(taskOf("panel-words"))}`);
    const choices = [...Object.keys(task.aliases).sort(), ...task.versions];
    select.replaceChildren(...choices.map((name) => new Option(name, name)));
    if (task.aliases.production) select.value = "production";
  } catch (err) {
    showError("words", err);
  }
}
const complete = debounce(async () => {
  const prefix = $("words-prefix").value;
  if (!prefix) { $("words-bars").replaceChildren(); showError("words", null); return; }
  try {
    const body = await api(predictUrl(taskOf("panel-words")), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ prefix, num_completions: 5, version: $("words-version").value || "production" }),
    });
    renderBars($("words-bars"), body.completions.map((c) => ({ label: c.text, probability: c.probability })),
      body.completions.length ? body.completions[0].text : null);
    showError("words", null);
  } catch (err) {
    $("words-bars").replaceChildren();
    showError("words", err);
  }
}, 150);
$("words-prefix").addEventListener("input", complete);
$("words-version").addEventListener("change", complete);
onShow.words = loadRnnVersions;
