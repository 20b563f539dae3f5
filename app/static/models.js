// modelhouse web page, the Models tab: every task's versions, its aliases with any canary or shadow, its
// history, and each version's details (loaded when opened). Loaded after app.js and uses its helpers
// ($, api, showError, startRequest, isCurrent, onShow). Data from the API only ever goes in as textContent.
"use strict";

const HISTORY_SHOWN = 20;
// The headline figures of a version: its accuracies, errors and bits per character (whatever the kind records).
const HEADLINE = /(^|_)(accuracy|error|bits_per_char)$/;

const modelUrl = (...parts) => `/models/${parts.map(encodeURIComponent).join("/")}`;
const count = (n) => n.toLocaleString("en");
const decimal = (x, digits = 1) => Number(x.toFixed(digits)).toLocaleString("en");  // 20 -> "20", 4.125 -> "4.1"
const when = (iso) => (iso || "").replace("T", " ").slice(0, 19);
const orNull = (promise) => promise.catch(() => null);  // an endpoint that fails leaves its part out

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text) node.textContent = text;
  if (className) node.className = className;
  return node;
}

// A table with these column headings, in its scrolling wrapper.
function makeTable(headings, className) {
  const wrap = el("div", "", `table-wrap ${className || ""}`.trim());
  const table = wrap.appendChild(el("table"));
  const head = table.createTHead().insertRow();
  for (const text of headings) head.appendChild(el("th", text));
  return { wrap, tbody: table.createTBody() };
}

function addRow(tbody, cells) {
  const tr = tbody.insertRow();
  for (const text of cells) tr.insertCell().textContent = text;
  return tr;
}

// Accuracies and errors are fractions, except published figures copied as percentages (75.1).
const percent = (x) => `${(x > 1 ? x : x * 100).toFixed(2)}%`;

function headline(metrics) {
  return Object.keys(metrics).filter((k) => HEADLINE.test(k) && typeof metrics[k] === "number").slice(0, 4)
    .map((k) => `${k.replaceAll("_", " ")}: ${/accuracy|error/.test(k) ? percent(metrics[k]) : metrics[k]}`)
    .join(", ");
}

// ---- aliases and their rollouts ---------------------------------------------------------------
// "canary: C at 20% (123 requests, 0 errors, p99 4.1 ms)": the counts are the answering process's.
function canaryText(c) {
  const figures = [`${count(c.requests)} requests`, `${count(c.errors)} errors`];
  if (c.p99_ms != null) figures.push(`p99 ${decimal(c.p99_ms)} ms`);
  const text = `canary: ${c.version} at ${decimal(c.percent, 2)}% (${figures.join(", ")})`;
  return c.breach ? `${text}, rolled back: ${c.breach}` : text;
}

// "shadow: S at 100% (agreement 0.98 over 500, 3 dropped)"
function shadowText(s) {
  const agreement = s.agreement == null ? "nothing compared yet"
    : `agreement ${decimal(s.agreement, 3)} over ${count(s.compared)}`;
  const figures = [agreement, `${count(s.drops)} dropped`];
  if (s.errors) figures.push(`${count(s.errors)} errors`);
  return `shadow: ${s.version} at ${decimal(s.percent, 2)}% (${figures.join(", ")})`;
}

// One alias: "production → V", then its canary and shadow when it has them (`state` is null when the alias
// endpoint did not answer: the line then says only where the alias points).
function aliasLine(alias, version, state) {
  const li = el("li");
  li.dataset.alias = alias;
  li.appendChild(el("span", `${alias} → ${state ? state.version : version}`, "alias"));
  for (const [kind, text] of [["canary", state && state.canary && canaryText(state.canary)],
    ["shadow", state && state.shadow && shadowText(state.shadow)]]) {
    if (text) li.appendChild(el("span", `; ${text}`, `rollout ${kind}`));
  }
  if (state && (state.canary || state.shadow)) li.title = `counts of worker process ${state.process}`;
  return li;
}

// ---- history ----------------------------------------------------------------------------------
// `body` holds the task's latest HISTORY_SHOWN + 1 events (the one more tells that there are older ones).
function historyBlock(task, body) {
  const box = el("div", "", "history");
  box.appendChild(el("h4", "History"));
  if (!body || !Array.isArray(body.events)) {
    box.appendChild(el("p", "History unavailable.", "note"));
    return box;
  }
  const events = [...body.events].sort((a, b) => String(b.time).localeCompare(String(a.time)));  // newest first
  if (!events.length) {
    box.appendChild(el("p", "No change recorded yet.", "note"));
    return box;
  }
  const { wrap, tbody } = makeTable(["time (UTC)", "event", "alias", "from → to", "actor", "reason"], "events");
  for (const e of events.slice(0, HISTORY_SHOWN)) {
    const moved = e.from == null && e.to == null ? "" : `${e.from ?? "—"} → ${e.to ?? "—"}`;
    addRow(tbody, [when(e.time), (e.event || "").replaceAll("_", " "), e.alias ?? "", moved, e.actor ?? "",
      e.reason ?? ""]);
  }
  box.appendChild(wrap);
  if (events.length > HISTORY_SHOWN) {
    const note = box.appendChild(el("p", `The latest ${HISTORY_SHOWN} events; older ones are in `, "note"));
    const link = note.appendChild(el("a", "the whole history"));
    link.href = modelUrl(task, "history");
    note.append(".");
  }
  return box;
}

// ---- a version's details: its pictures, its other files, its layers ------------------------------
function versionDetails(task, v) {
  const details = el("details", "", "version");
  details.dataset.task = task;
  details.dataset.version = v.version;
  details.appendChild(el("summary", v.aliases.length ? `${v.version} (${v.aliases.join(", ")})` : v.version));
  const box = details.appendChild(el("div", "Loading…", "version-body"));
  details.addEventListener("toggle", () => {
    if (details.open && !details.dataset.loaded) {
      details.dataset.loaded = "true";
      loadVersion(task, v.version, details, box);
    }
  });
  return details;
}

async function loadVersion(task, version, details, box) {
  try {
    const body = await api(modelUrl(task, version));
    const names = Object.keys(body.manifest.artifacts || {});
    const artifact = (name) => modelUrl(task, version, "artifacts", name);
    const parts = [el("p", `${count(body.summary.total_parameters)} parameters, ${body.manifest.architecture.name}`)];
    const pictures = el("div", "", "artifacts");
    for (const name of names.filter((n) => n.endsWith(".png"))) {
      const figure = pictures.appendChild(el("figure"));
      const img = figure.appendChild(new Image());
      img.src = artifact(name);
      img.alt = `${name.replace(".png", "").replaceAll("_", " ")} of ${version}`;
      figure.appendChild(el("figcaption", name.replace(".png", "").replaceAll("_", " ")));
    }
    parts.push(pictures);
    const others = names.filter((n) => !n.endsWith(".png"));
    if (others.length) {
      const files = el("p", "Files: ", "files");
      others.forEach((name, i) => {
        const link = files.appendChild(el("a", name));
        link.href = artifact(name);
        if (i < others.length - 1) files.append(", ");
      });
      parts.push(files);
    }
    const { wrap, tbody } = makeTable(["layer", "type", "output shape", "parameters"], "layers");
    for (const layer of body.summary.layers) {
      addRow(tbody, [layer.name, layer.type, JSON.stringify(layer.output_shape), count(layer.parameters)]);
    }
    parts.push(el("h4", "Layers"), wrap);
    box.replaceChildren(...parts);
  } catch (err) {
    delete details.dataset.loaded;  // try again when opened again
    box.replaceChildren(el("p", err.message, "error"));
  }
}

// ---- one task -----------------------------------------------------------------------------------
function versionsTable(task, versions, detailsOf) {
  const headings = ["version", "aliases", "architecture", "parameters", "metrics", "created"];
  const { wrap, tbody } = makeTable(headings, "versions");
  for (const v of versions) {
    const tr = addRow(tbody, [v.version, v.aliases.join(", "), v.architecture, count(v.parameters ?? 0),
      headline(v.metrics), when(v.created_at).slice(0, 16)]);
    tr.tabIndex = 0;
    tr.dataset.task = task;
    tr.dataset.version = v.version;
    const open = () => {
      const details = detailsOf.get(v.version);
      details.open = true;  // its toggle event loads it
      details.scrollIntoView({ behavior: "smooth", block: "nearest" });
    };
    tr.addEventListener("click", open);
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
  }
  return wrap;
}

async function taskSection(task) {
  const section = el("div", "", "task");
  section.dataset.task = task;
  section.appendChild(el("h3", task));
  try {
    const [detail, history] = await Promise.all([api(modelUrl(task)),
      orNull(api(`${modelUrl(task, "history")}?limit=${HISTORY_SHOWN + 1}`))]);
    const aliases = Object.entries(detail.aliases).sort(([a], [b]) => a.localeCompare(b));
    const states = await Promise.all(aliases.map(([alias]) => orNull(api(modelUrl(task, "aliases", alias)))));
    const list = section.appendChild(el("ul", "", "aliases"));
    list.setAttribute("aria-label", `Aliases of ${task}`);
    list.append(...aliases.map(([alias, version], i) => aliasLine(alias, version, states[i])));
    const versions = [...detail.versions].reverse();  // newest first
    const detailsOf = new Map(versions.map((v) => [v.version, versionDetails(task, v)]));
    section.appendChild(versionsTable(task, versions, detailsOf));
    section.appendChild(el("div", "", "version-list")).append(...detailsOf.values());
    section.appendChild(historyBlock(task, history));
  } catch (err) {
    section.appendChild(el("p", err.message, "error"));
  }
  return section;
}

async function loadModels() {
  const ticket = startRequest("models");  // shown twice quickly: only the newest answer is drawn
  try {
    const tasks = (await api("/models")).tasks.filter((t) => t.versions.length);
    const sections = await Promise.all(tasks.map((t) => taskSection(t.task)));
    if (!isCurrent("models", ticket)) return;
    $("models-tables").replaceChildren(...sections);
    showError("models", null);
  } catch (err) {
    if (isCurrent("models", ticket)) showError("models", err);
  }
}
onShow.models = loadModels;
