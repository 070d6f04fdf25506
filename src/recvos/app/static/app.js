// recvos app: the page's logic. Plain JavaScript, no libraries, nothing loaded from outside this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  session: null,   // {id, allow_paths, heartbeat_s, limits}
  video: null,     // {name, num_frames, width, height, fps}
  frame: 0,
  obj: 1,
  objects: new Set([1]),
  version: 0,
  job: null,
  results: 0,
  image: null,     // the view image of the current frame
  prompts: [],     // prompts of the current frame
  drag: null,      // {x0, y0, x1, y1} while drawing a box
  pending: 0,      // requests in flight (tests wait for 0)
};

// ---------------------------------------------------------------------------------------------- helpers
function setPending(delta) {
  state.pending += delta;
  document.body.dataset.pending = String(state.pending);
}

function say(text, ok = false) {
  const m = $("message");
  m.textContent = text || "";
  m.className = ok ? "ok" : "";
}

function colour(id) {  // the DAVIS palette, as in recvos.data.masks
  let r = 0, g = 0, b = 0, c = id;
  for (let s = 7; s >= 0; s--) {
    r |= (c & 1) << s; g |= ((c >> 1) & 1) << s; b |= ((c >> 2) & 1) << s; c >>= 3;
  }
  return `rgb(${r},${g},${b})`;
}

async function api(path, options = {}) {
  setPending(1);
  try {
    const r = await fetch(`/api/s/${state.session.id}/${path}`, options);
    const type = r.headers.get("content-type") || "";
    const data = type.includes("json") ? await r.json() : null;
    if (!r.ok) {
      if (r.status === 404) stopTimers();
      throw new Error((data && data.error) || `${r.status} ${r.statusText}`);
    }
    return data;
  } finally {
    setPending(-1);
  }
}

const post = (path, body) => api(path, {
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: body === undefined ? "{}" : JSON.stringify(body),
});

async function guarded(fn) {
  try {
    await fn();
  } catch (e) {
    say(e.message);
  }
}

// ------------------------------------------------------------------------------------------- drawing
function draw() {
  const cv = $("canvas");
  const ctx = cv.getContext("2d");
  if (state.image) ctx.drawImage(state.image, 0, 0, cv.width, cv.height);
  const r = Math.max(3, Math.round(Math.min(cv.width, cv.height) / 80));
  ctx.lineWidth = Math.max(1, r / 2);
  for (const p of state.prompts) {
    ctx.strokeStyle = colour(p.obj);
    if (p.box) {
      ctx.setLineDash([6, 4]);
      ctx.strokeRect(p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]);
      ctx.setLineDash([]);
    }
    p.points.forEach((pt, i) => {
      ctx.beginPath();
      ctx.arc(pt[0], pt[1], r, 0, 2 * Math.PI);
      ctx.fillStyle = p.labels[i] ? "#2bd45a" : "#e5383b";
      ctx.fill();
      ctx.strokeStyle = "#fff";
      ctx.stroke();
    });
  }
  if (state.drag) {
    const d = state.drag;
    ctx.strokeStyle = colour(state.obj);
    ctx.strokeRect(Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.abs(d.x1 - d.x0), Math.abs(d.y1 - d.y0));
  }
}

let viewToken = 0;
async function showFrame(t) {
  if (!state.video) return;
  state.frame = Math.max(0, Math.min(state.video.num_frames - 1, t));
  $("frame-slider").value = state.frame;
  $("frame-label").textContent = `frame ${state.frame} / ${state.video.num_frames - 1}`;
  const token = ++viewToken;
  setPending(1);
  try {
    const img = new Image();
    const loaded = new Promise((ok, bad) => { img.onload = ok; img.onerror = () => bad(new Error("could not load the frame")); });
    img.src = `/api/s/${state.session.id}/view/${state.frame}.jpg?v=${state.version}-${token}`;
    const [prompts] = await Promise.all([api(`prompts/${state.frame}`), loaded]);
    if (token !== viewToken) return;
    state.image = img;
    state.prompts = prompts;
    draw();
  } catch (e) {
    say(e.message);
  } finally {
    setPending(-1);
  }
}

function renderObjects() {
  const ul = $("objects");
  ul.innerHTML = "";
  for (const id of [...state.objects].sort((a, b) => a - b)) {
    const li = document.createElement("li");
    li.dataset.obj = id;
    li.id = `object-${id}`;
    if (id === state.obj) li.className = "active";
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = colour(id);
    li.append(sw, document.createTextNode(`object ${id}`));
    li.onclick = () => { state.obj = id; renderObjects(); };
    ul.append(li);
  }
}

function renderStatus(st) {
  state.version = st.version;
  state.results = st.results;
  state.job = st.job;
  for (const o of st.objects) state.objects.add(o);
  renderObjects();
  const running = !!(st.job && (st.job.state === "queued" || st.job.state === "running"));
  document.body.dataset.job = st.job ? st.job.state : "none";
  $("cancel").disabled = !running;
  $("propagate").disabled = running;
  $("zero-shot").disabled = running;
  const ready = st.results > 0 && !running;
  for (const [id, file] of [["dl-masks", "masks.zip"], ["dl-overlay", "overlay.mp4"]]) {
    const a = $(id);
    a.classList.toggle("disabled", !ready);
    if (ready) a.href = `/api/s/${state.session.id}/${file}`; else a.removeAttribute("href");
  }
  const job = st.job;
  if (job) {
    const n = Math.max(1, job.total - job.start);
    $("progress").max = n;
    $("progress").value = job.done;
    const what = { queued: "waiting for another session", running: job.message || `${job.kind}: frame ${job.start + job.done} / ${job.total}`,
      done: `done: frames ${job.start}..${job.total - 1}`, cancelled: job.message, error: job.message }[job.state];
    $("job-status").textContent = what || "";
    if (job.state === "error") say(job.message);
  }
}

// ------------------------------------------------------------------------------------------ polling
let pingTimer = null, pollTimer = null;
function stopTimers() {
  clearInterval(pingTimer); clearTimeout(pollTimer);
  pingTimer = pollTimer = null;
  say("this session has ended (closed or timed out); reload the page");
}

async function refresh() {
  const st = await api("status");
  renderStatus(st);
  return st;
}

async function pollJob() {
  try {
    const st = await refresh();
    const running = st.job && (st.job.state === "queued" || st.job.state === "running");
    if (running) {
      pollTimer = setTimeout(pollJob, 300);
    } else {
      pollTimer = null;
      if (st.job && st.job.state === "done") say(`propagated ${st.job.total - st.job.start} frames`, true);
      await showFrame(state.frame);
    }
  } catch (e) {
    say(e.message);
  }
}

// ------------------------------------------------------------------------------------------- actions
function fitCanvas() {  // as large as the column allows, but whole in the window
  if (!state.video) return;
  const cv = $("canvas");
  const room = Math.max(200, window.innerHeight - cv.parentElement.getBoundingClientRect().top - 70);
  const width = Math.min(cv.parentElement.clientWidth, 960, room * state.video.width / state.video.height);
  cv.style.width = `${Math.floor(width)}px`;
}

function videoOpened(info) {
  state.video = info;
  state.objects = new Set([1]);
  state.obj = 1;
  state.prompts = [];
  const cv = $("canvas");
  cv.width = info.width;
  cv.height = info.height;
  $("frame-slider").max = info.num_frames - 1;
  $("workspace").hidden = false;
  fitCanvas();
  $("video-info").textContent = `${info.name}: ${info.num_frames} frames, ${info.width}x${info.height}`;
  say(`opened ${info.name}`, true);
  renderObjects();
  return refresh().then(() => showFrame(0));
}

async function upload() {
  const file = $("file-input").files[0];
  if (!file) throw new Error("choose a video file first");
  say(`uploading ${file.name}...`, true);
  const info = await api(`upload?name=${encodeURIComponent(file.name)}`, { method: "POST", body: file });
  await videoOpened(info);
}

async function openPath() {
  const path = $("path-input").value.trim();
  if (!path) throw new Error("type a path on the server first");
  say(`opening ${path}...`, true);
  await videoOpened(await post("open", { path }));
}

async function sendPrompt(body) {
  const r = await post("prompt", { frame: state.frame, obj: state.obj, ...body });
  say(r.message || `object ${r.obj}: ${r.area} pixels on frame ${r.frame}`, !r.message);
  state.objects.add(state.obj);
  await refresh();
  await showFrame(state.frame);
}

function toImage(ev) {
  const cv = $("canvas");
  const rect = cv.getBoundingClientRect();
  return [(ev.clientX - rect.left) * cv.width / rect.width, (ev.clientY - rect.top) * cv.height / rect.height];
}

function tool() {
  return document.querySelector('input[name="tool"]:checked').value;
}

function setupCanvas() {
  const cv = $("canvas");
  cv.addEventListener("contextmenu", (ev) => {
    ev.preventDefault();
    const [x, y] = toImage(ev);
    guarded(() => sendPrompt({ point: [x, y], label: 0 }));
  });
  cv.addEventListener("mousedown", (ev) => {
    if (ev.button !== 0 || !state.video) return;
    const [x, y] = toImage(ev);
    if (tool() === "box") state.drag = { x0: x, y0: y, x1: x, y1: y };
  });
  cv.addEventListener("mousemove", (ev) => {
    if (!state.drag) return;
    [state.drag.x1, state.drag.y1] = toImage(ev);
    draw();
  });
  window.addEventListener("mouseup", (ev) => {
    if (ev.button !== 0 || !state.video) return;
    if (state.drag) {
      const d = state.drag;
      state.drag = null;
      const box = [Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.max(d.x0, d.x1), Math.max(d.y0, d.y1)];
      guarded(() => sendPrompt({ box }));
      return;
    }
    if (ev.target !== cv) return;
    const [x, y] = toImage(ev);
    guarded(() => sendPrompt({ point: [x, y], label: tool() === "neg" ? 0 : 1 }));
  });
}

function setupControls() {
  $("upload-btn").onclick = () => guarded(upload);
  $("path-btn").onclick = () => guarded(openPath);
  $("frame-slider").addEventListener("input", (ev) => showFrame(Number(ev.target.value)));
  $("prev-frame").onclick = () => showFrame(state.frame - 1);
  $("next-frame").onclick = () => showFrame(state.frame + 1);
  $("add-object").onclick = () => {
    const id = Math.max(0, ...state.objects) + 1;
    state.objects.add(id);
    state.obj = id;
    renderObjects();
  };
  $("clear-frame").onclick = () => guarded(async () => {
    await post(`clear/${state.frame}/${state.obj}`);
    await showFrame(state.frame);
  });
  $("remove-object").onclick = () => guarded(async () => {
    await post(`remove/${state.obj}`);
    state.objects.delete(state.obj);
    if (!state.objects.size) state.objects.add(1);
    state.obj = Math.min(...state.objects);
    await refresh();
    await showFrame(state.frame);
  });
  $("reset").onclick = () => guarded(async () => {
    await post("reset");
    state.objects = new Set([1]);
    state.obj = 1;
    await refresh();
    await showFrame(state.frame);
  });
  const start = (zero_shot) => guarded(async () => {
    say("");
    await post("propagate", { zero_shot, online: !zero_shot && $("online").checked, flip: $("flip").checked });
    await refresh();
    pollJob();
  });
  $("propagate").onclick = () => start(false);
  $("zero-shot").onclick = () => start(true);
  $("cancel").onclick = () => guarded(() => post("cancel"));
  document.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT" && ev.target.type === "text") return;
    if (ev.key === "ArrowLeft") showFrame(state.frame - 1);
    if (ev.key === "ArrowRight") showFrame(state.frame + 1);
  });
}

async function main() {
  setPending(1);
  try {
    const r = await fetch("/api/session", { method: "POST" });
    state.session = await r.json();
    document.body.dataset.session = state.session.id;
    $("path-group").hidden = !state.session.allow_paths;
    pingTimer = setInterval(() => api("ping").catch(() => {}), state.session.heartbeat_s * 1000);
    window.addEventListener("pagehide", () => navigator.sendBeacon(`/api/s/${state.session.id}/close`));
    setupCanvas();
    window.addEventListener("resize", fitCanvas);
    setupControls();
    renderObjects();
  } catch (e) {
    say(`cannot start a session: ${e.message}`);
  } finally {
    setPending(-1);
  }
}

main();
