// msa-serve's page: upload a clip, follow its job stage by stage, show the result, keep a session table.
"use strict";

const $ = (id) => document.getElementById(id);
const HISTORY_KEY = "msa-serve-history";
let STAGES = [];
let current = null; // id of the job this page is following

function show(id, on) { $(id).hidden = !on; }

function fail(message) {
  $("error").textContent = message;
  show("error", true);
  show("progress", false);
}

async function start() {
  const [health, bundles] = await Promise.all([fetch("/v1/health"), fetch("/v1/bundles")]);
  STAGES = (await health.json()).stages || [];
  for (const b of await bundles.json()) {
    const opt = document.createElement("option");
    opt.value = b.name;
    opt.textContent = `${b.name} (${b.task}: ${b.modalities.join(" + ")})`;
    $("bundle").append(opt);
  }
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", () => { if ($("file").files.length) send($("file").files[0]); });
  $("csv").addEventListener("click", downloadCsv);
  window.addEventListener("pagehide", () => {  // a closed page cancels its job
    if (current) fetch(`/v1/jobs/${current}`, { method: "DELETE", keepalive: true });
  });
  renderHistory();
}

function send(file) {
  show("error", false);
  show("result", false);
  show("progress", true);
  $("progress-clip").textContent = file.name;
  setProgress("uploading", 0, []);
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("bundle", $("bundle").value);
  const seconds = $("segments").value.trim();  // empty: the service's --segments
  if (seconds !== "") form.append("segments", seconds);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/v1/predict?wait=false");
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) $("progress-stage").textContent = `uploading ${Math.round(100 * e.loaded / e.total)}%`;
  };
  xhr.onerror = () => fail(`${file.name}: the upload failed (is msa-serve still running?)`);
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (err) { body = { error: xhr.statusText }; }
    if (xhr.status !== 202) { fail(body.error || `HTTP ${xhr.status}`); return; }
    current = body.id;
    poll(body.id);
  };
  xhr.send(form);
}

async function poll(id) {
  let job;
  try {
    job = await (await fetch(`/v1/jobs/${id}`)).json();
  } catch (err) {
    fail("lost contact with msa-serve");
    return;
  }
  if (job.status === "done") {
    current = null;
    setProgress("done", 1, STAGES);
    showResult(job.result, job.bundle);
    addHistory(job.result);
    show("progress", false);
  } else if (job.status === "failed" || job.status === "cancelled") {
    current = null;
    fail(job.error ? job.error.error : job.status);
  } else {
    setProgress(job.stage || job.status, job.progress, job.stages);
    setTimeout(() => poll(id), 300);
  }
}

function setProgress(stage, progress, done) {
  $("progress-stage").textContent = stage;
  $("progress-fill").style.width = `${Math.round(100 * progress)}%`;
  const list = $("stages");
  list.replaceChildren(...STAGES.map((s) => {
    const li = document.createElement("li");
    li.textContent = s;
    if (s === stage) li.className = "now";
    else if (done.includes(s)) li.className = "done";
    return li;
  }));
}

function pct(x) { return x === null || x === undefined ? "n/a" : `${Math.round(100 * x)}%`; }

function showResult(r, bundle) {
  const [lo, hi] = r.range;
  $("r-label").textContent = r.label;
  $("r-label").className = r.label.replace(/\s+/g, "-");
  $("r-score").textContent = `${r.score >= 0 ? "+" : ""}${r.score.toFixed(2)} on [${lo}, ${hi}]`;
  $("r-clip").textContent = r.clip;
  $("r-task").textContent = `${r.task}, bundle ${bundle}`;
  $("r-transcript").textContent = r.transcript ? `“${r.transcript}” (${r.transcript_source})` : "(none)";
  $("r-drivers").textContent = Object.entries(r.modalities).map(([m, v]) => `${m} ${v.toFixed(2)}`).join(", ");
  const cut = Object.entries(r.truncated || {});  // inputs longer than the model reads: it scored their start
  $("r-cut").textContent = cut.map(([m, [read, of]]) => `${m} ${read} of ${of} ${m === "text" ? "tokens" : "frames"}`)
    .join(", ");
  $("r-cut-label").textContent = r.segments ? "read only the start of some segments" : "read only the start";
  show("r-cut-label", cut.length > 0);
  show("r-cut", cut.length > 0);
  const runs = r.segments || [];  // msa-serve --segments: each run of speech scored on its own
  $("r-segments").replaceChildren(...runs.map((s) => {
    const line = document.createElement("div");
    const score = r.probabilities ? s.score.toFixed(2) : `${s.score >= 0 ? "+" : ""}${s.score.toFixed(2)}`;
    line.textContent = `${s.start.toFixed(1)}-${s.end.toFixed(1)} s ${score} ${s.label}: ${s.text}`;
    return line;
  }));
  show("r-segments-label", runs.length > 0);
  show("r-segments", runs.length > 0);
  $("r-face").textContent = r.face_ratio === null ? "no video" : `${pct(r.face_ratio)} of frames`;
  $("r-speech").textContent = r.speech_seconds === null ? "no audio" : `${r.speech_seconds.toFixed(1)} s`;
  $("r-timings").textContent = Object.entries(r.timings).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ");
  if (r.plot) {
    $("r-plot").src = r.plot;
    show("r-plot", true);
  } else {
    show("r-plot", false);
  }
  show("result", true);
}

function history() {
  try { return JSON.parse(sessionStorage.getItem(HISTORY_KEY)) || []; } catch (err) { return []; }
}

function addHistory(r) {
  const rows = history();
  rows.push({ time: new Date().toISOString().slice(0, 19).replace("T", " "), clip: r.clip, task: r.task,
              label: r.label, score: r.score, face_ratio: r.face_ratio, speech_seconds: r.speech_seconds,
              transcript: r.transcript });
  sessionStorage.setItem(HISTORY_KEY, JSON.stringify(rows));
  renderHistory();
}

function renderHistory() {
  const rows = history();
  show("history", rows.length > 0);
  $("rows").replaceChildren(...rows.slice().reverse().map((h) => {
    const tr = document.createElement("tr");
    for (const v of [h.time, h.clip, h.label, h.score.toFixed(2), pct(h.face_ratio),
                     h.speech_seconds === null ? "n/a" : h.speech_seconds.toFixed(1), h.transcript]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    return tr;
  }));
}

function csvCell(v) {
  const s = v === null || v === undefined ? "" : String(v);
  // quote every cell; a leading = + - @ is prefixed so a spreadsheet never runs it as a formula
  return `"${(/^[=+\-@]/.test(s) && isNaN(Number(s)) ? "'" + s : s).replace(/"/g, '""')}"`;
}

function downloadCsv() {
  const cols = ["time", "clip", "task", "label", "score", "face_ratio", "speech_seconds", "transcript"];
  const lines = [cols.join(",")].concat(history().map((h) => cols.map((c) => csvCell(h[c])).join(",")));
  const url = URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = "msa-results.csv";
  document.body.append(a);
  a.click();
  a.remove();
  URL.revokeObjectURL(url);
}

start().catch((err) => fail(`cannot reach msa-serve (${err})`));
