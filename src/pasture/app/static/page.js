// pasture's page. Every piece of data reaches the page as text (textContent, element properties), never
// as markup, and every handler is attached with addEventListener: the server's Content-Security-Policy
// forbids inline script, so a run or class name holding quotes and markup stays a name.
"use strict";

const $ = id => document.getElementById(id);
const pct = x => (100 * x).toFixed(1) + "%";

// el("td", {className: "label"}, "text", child, ...): an element with properties and children (strings
// become text nodes).
function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}
function button(text, onClick, props = {}) {
  const node = el("button", props, text);
  node.addEventListener("click", onClick);
  return node;
}
function say(where, text, kind) {
  $(where).replaceChildren(...(text ? [el("div", {className: `message ${kind}`}, text)] : []));
}
function accuracy(row) {
  return `${pct(row.test_accuracy)} (95% CI ${pct(row.test_ci95[0])}-${pct(row.test_ci95[1])}, n=${row.n_test})`;
}
const runPath = name => "/api/runs/" + encodeURIComponent(name);

// The launch token: from the link's fragment (#token=..., which no browser sends to any server; an older
// link's ?token= is read too), kept for this tab only (sessionStorage), taken out of the address bar and
// history, and sent as the X-Pasture-Token header on every request. No cookie carries it: a cookie would
// reach every other server on 127.0.0.1 (cookies ignore ports).
const TOKEN = (() => {
  const given = new URLSearchParams(location.hash.slice(1)).get("token") ||
                new URLSearchParams(location.search).get("token");
  if (given) {
    sessionStorage.setItem("pasture-token", given);
    history.replaceState(null, "", "/");
  }
  return sessionStorage.getItem("pasture-token") || "";
})();

function authorised(options = {}) {
  return {...options, headers: {...(options.headers || {}), "X-Pasture-Token": TOKEN}};
}

// A file of the app (a figure, a heatmap, a download) fetched with the token, as a blob: URL.
async function fileUrl(url) {
  const response = await fetch(url, authorised());
  if (!response.ok) throw new Error(`${url}: the server answered ${response.status}`);
  return URL.createObjectURL(await response.blob());
}

// An <img> whose picture is fetched with the token (an <img src> request could carry no header).
function appImage(url, props) {
  const image = el("img", props);
  fileUrl(url).then(blob => { image.src = blob; }, () => { image.alt = `${props.alt || url}: not available`; });
  return image;
}

async function call(url, options) {
  const response = await fetch(url, authorised(options));
  const body = await response.json().catch(() => ({error: `the server answered ${response.status}`}));
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return body;
}

function show(name) {
  for (const id of ["teach", "test", "improve", "runs"]) {
    $(id).classList.toggle("on", id === name);
    $("tab-" + id).classList.toggle("on", id === name);
    $("tab-" + id).setAttribute("aria-selected", String(id === name));
  }
  stopCamera();  // a camera runs only while its page is shown
  if (name !== "teach") loadRuns();
}

// ------------------------------------------------------------------------------------------- the camera
// One stream at a time, shared by Teach (hold to record frames into a class) and Test (live labels).
// Frames are JPEGs drawn from the <video> on a canvas, at most 640 px wide.

let stream = null, cameraUser = null;  // the stream, and the <video> showing it
const FRAME_EVERY_MS = 250;  // recording: 4 frames a second
const LIVE_EVERY_MS = 300;  // live labels: at most about 3 a second, one request at a time

async function openCamera(video) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("this browser gives pages a camera only on a secure page: open the app at 127.0.0.1 " +
                    "(or localhost) on this machine, or over HTTPS");
  }
  stopCamera();
  try {
    stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}, height: {ideal: 480}}, audio: false});
  } catch (error) {
    throw new Error(error.name === "NotAllowedError" ? "the camera was not allowed: allow it in the browser's address bar and try again"
                                                     : `no camera could be opened (${error.name}): check that one is connected and free`);
  }
  cameraUser = video;
  video.srcObject = stream;
  await video.play();
}

function stopCamera() {
  if (stream) for (const track of stream.getTracks()) track.stop();
  if (cameraUser) cameraUser.srcObject = null;
  stream = null; cameraUser = null; live = null;
  for (const panel of document.querySelectorAll(".camera")) panel.hidden = true;
  for (const use of document.querySelectorAll(".use-camera")) use.hidden = false;
}

function frame(video) {
  const scale = Math.min(1, 640 / (video.videoWidth || 640));
  const canvas = el("canvas", {width: Math.round((video.videoWidth || 640) * scale), height: Math.round((video.videoHeight || 480) * scale)});
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve, reject) => canvas.toBlob(
    blob => blob ? resolve(blob) : reject(new Error("the camera gave no picture yet; try again")), "image/jpeg", 0.9));
}

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

// -------------------------------------------------------------------------------------- Teach's cards

function classCard() {
  const files = [];  // this class's photos (File objects), in the order added
  const name = el("input", {className: "class-name", placeholder: "class name", maxLength: 100});
  name.setAttribute("aria-label", "class name");
  const picker = el("input", {className: "class-files", type: "file", accept: "image/*", multiple: true, hidden: true});
  const count = el("p", {className: "count"}), thumbs = el("div", {className: "thumbs"});
  const card = el("div", {className: "card"});
  card.photos = files;
  const label = () => name.value.trim() || "this class";

  function refresh() {
    count.textContent = files.length ? `${files.length} photo${files.length === 1 ? "" : "s"}` : "no photos yet";
  }
  function add(newFiles) {
    for (const file of newFiles) {
      if (!file.type.startsWith("image/") && file.type) continue;  // a dropped text file is not a photo
      files.push(file);
      const url = URL.createObjectURL(file);
      const remove = button("\u00d7", () => {
        files.splice(files.indexOf(file), 1); URL.revokeObjectURL(url); thumb.remove(); refresh();
      }, {className: "remove", title: `remove ${file.name}`});
      remove.setAttribute("aria-label", `remove ${file.name} from ${label()}`);
      const thumb = el("figure", {className: "thumb"}, el("img", {src: url, alt: file.name}), remove);
      thumbs.append(thumb);
    }
    refresh();
  }
  picker.addEventListener("change", () => { add(picker.files); picker.value = ""; });

  const drop = el("div", {className: "drop"},
    el("p", {}, "Drop photos here, or ", button("choose photos", () => picker.click(), {type: "button", className: "choose"}), picker),
    count, thumbs);
  dropTarget(drop, add);

  // the camera: hold the record button (mouse, touch, or Space/Enter held down) to add frames
  const video = el("video", {muted: true, playsInline: true});
  const record = el("button", {className: "record", type: "button"}, "Hold to record");
  const panel = el("div", {className: "camera", hidden: true}, video,
    el("div", {className: "camera-controls"}, record, button("Stop camera", stopCamera, {type: "button"})));
  let recording = null;
  const startRecording = async () => {
    if (recording || cameraUser !== video) return;
    record.classList.add("on"); record.textContent = "Recording...";
    const me = recording = {};
    let n = 0;
    while (recording === me && cameraUser === video) {  // a stopped camera ends the recording too
      try { add([new File([await frame(video)], `camera-${Date.now()}-${n++}.jpg`, {type: "image/jpeg"})]); }
      catch (error) { say("teach-message", error.message, "error"); break; }
      await sleep(FRAME_EVERY_MS);
    }
  };
  const stopRecording = () => { recording = null; record.classList.remove("on"); record.textContent = "Hold to record"; };
  // the pointer is captured, so the recording ends where the finger or button is released, wherever that is
  record.addEventListener("pointerdown", event => {
    event.preventDefault(); record.setPointerCapture(event.pointerId); startRecording();
  });
  for (const type of ["pointerup", "pointercancel", "lostpointercapture", "blur"]) record.addEventListener(type, stopRecording);
  record.addEventListener("keydown", event => {
    if ((event.key === " " || event.key === "Enter") && !event.repeat) { event.preventDefault(); startRecording(); }
  });
  record.addEventListener("keyup", event => { if (event.key === " " || event.key === "Enter") stopRecording(); });
  const use = button("Use camera", async () => {
    say("teach-message", "", "");
    try { await openCamera(video); panel.hidden = false; use.hidden = true; record.focus(); }
    catch (error) { say("teach-message", error.message, "error"); }
  }, {type: "button", className: "use-camera"});

  card.append(
    el("header", {}, name, button("remove class", () => { if (cameraUser === video) stopCamera(); card.remove(); },
                                  {type: "button", className: "remove-class"})),
    drop, use, panel);
  refresh();
  return card;
}

// Drag and drop onto `zone`: `add(files)` with what was dropped.
function dropTarget(zone, add) {
  zone.addEventListener("dragover", event => { event.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", event => { event.preventDefault(); zone.classList.remove("over"); add(event.dataTransfer.files); });
}

function addClass() {
  $("classes").append(classCard());
}

let watching = null;  // the job this page follows

async function watch(job) {
  const bar = $("progress"), cancel = $("cancel");
  bar.hidden = false;
  if (job.epochs) { bar.max = job.epochs; bar.value = 0; } else bar.removeAttribute("value");  // a probe: no epochs
  cancel.hidden = false; cancel.disabled = false;
  watching = job.job;
  say("teach-message", `training ${job.run}...`, "info");
  try {
    for (;;) {
      await new Promise(resolve => setTimeout(resolve, 500));
      const status = await call("/api/jobs/" + job.job);
      if (status.epochs) bar.value = status.epoch;
      if (status.state === "running") {
        const doing = status.epochs ? `epoch ${status.epoch} of ${status.epochs}` : "reading the photos with the pretrained networks";
        say("teach-message", (status.stopping ? `stopping ${job.run}...` : `training ${job.run}: ${doing}`) +
            (status.eta_s !== null && !status.stopping ? `, about ${Math.ceil(status.eta_s)} s left` : ""), "info");
        continue;
      }
      if (status.state === "cancelled") return say("teach-message", status.error, "info");
      if (status.state !== "done") throw new Error(status.error);
      say("teach-message", `${job.run} is trained.` + (status.warnings.length ? " " + status.warnings.join(" ") : ""), "info");
      showResult("teach-result", job.run, status.metrics);
      return;
    }
  } finally {
    bar.hidden = true; cancel.hidden = true; watching = null;
  }
}

async function teach() {
  say("teach-message", "", ""); $("teach-result").replaceChildren();
  const form = new FormData(), names = [];
  for (const card of document.querySelectorAll(".card")) {
    const name = card.querySelector(".class-name").value.trim();
    if (!name && !card.photos.length) continue;  // an empty card is ignored
    for (const file of card.photos) form.append("class_" + names.length, file);
    names.push(name);
  }
  form.append("classes", JSON.stringify(names));
  form.append("name", $("run-name").value.trim());
  form.append("mode", document.querySelector("input[name=mode]:checked").value);
  const mode = document.querySelector("input[name=mode]:checked").value;
  if ($("epochs").value && mode === "scratch") form.append("epochs", $("epochs").value);  // a probe has none
  $("train").disabled = true;
  try {
    await watch(await call("/api/teach", {method: "POST", body: form}));
  } catch (error) {
    say("teach-message", error.message, "error");
  } finally {
    $("train").disabled = false;
  }
}

async function cancelTraining() {
  if (!watching) return;
  $("cancel").disabled = true;
  try { await call(`/api/jobs/${watching}/cancel`, {method: "POST"}); }
  catch (error) { say("teach-message", error.message, "error"); }
}

function showResult(where, run, metrics) {
  const testLink = button("Test", () => show("test"), {className: "link", type: "button"});
  const [low, high] = metrics.test_ci95;
  $(where).replaceChildren(
    el("p", {}, el("b", {}, `Test accuracy: ${accuracy(metrics)}`),
       ` on photos kept aside from the same uploads. What it means: on more photos like these, the accuracy ` +
       `would very likely (95%) lie between ${pct(low)} and ${pct(high)}; ${metrics.n_test} test photos cannot ` +
       "say more. Photos from elsewhere (another camera, place or season) are the honest test: drop some in ",
       testLink, "."),
    confusionTable(metrics.classes, metrics.confusion),
    el("div", {className: "figures"}));
  call(runPath(run)).then(row => {
    const curve = curveChart(row);
    $(where).querySelector(".figures").replaceChildren(classChart(row.per_class), ...(curve ? [curve] : []));
  });
}

// The PNG figures the page shows as pictures (the others, curves and the confusion matrix, it draws
// itself); the server lists which a run has.
const FIGURES = {"top_losses.png": "top losses"};

function figures(run, row, wanted) {
  return wanted.filter(file => row.figures.includes(file))
    .map(file => appImage(`${runPath(run)}/files/${file}`, {className: "figure", alt: FIGURES[file]}));
}

let formats = null;  // a promise of the export formats this machine can write: [{name, title}]

async function exportRun(name, format) {
  say("runs-message", `exporting ${name} as ${format}...`, "info");
  try {
    const made = await call(runPath(name) + "/export?format=" + encodeURIComponent(format), {method: "POST"});
    // fetched with the token, saved under the server's plain-character name (quotes or '?' in a download
    // name cancel it)
    const url = await fileUrl(made.file);
    const link = el("a", {href: url, download: made.name, hidden: true});
    document.body.append(link); link.click(); link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    say("runs-message", `${made.name}: ${(made.bytes / 1e6).toFixed(1)} MB`, "info");
  } catch (error) { say("runs-message", error.message, "error"); }
}

async function resumeRun(name) {
  show("teach");
  say("teach-message", "", ""); $("teach-result").replaceChildren();
  $("train").disabled = true;
  try { await watch(await call(runPath(name) + "/resume", {method: "POST"})); }
  catch (error) { say("teach-message", error.message, "error"); }
  finally { $("train").disabled = false; }
}

async function deleteRun(name) {
  if (!window.confirm(`Delete the run ${name} and its files?`)) return;
  try {
    await call(runPath(name), {method: "DELETE"});
    $("run-details").replaceChildren();
    await loadRuns();
  } catch (error) { say("runs-message", error.message, "error"); }
}

async function loadRuns() {
  try {
    const runs = await call("/api/runs"), downloads = await formats;
    const select = $("test-run"), chosen = select.value;
    select.replaceChildren(...runs.filter(r => r.finished).map(r => el("option", {value: r.name}, r.name)));
    if (chosen) select.value = chosen;
    // Improve adapts probe runs (the default recipe) and fine-tuned ones: from-scratch runs and students are not offered
    const improve = $("improve-run"), improving = improve.value;
    improve.replaceChildren(...runs.filter(r => r.finished && r.adaptable).map(r => el("option", {value: r.name}, r.name)));
    if (improving) improve.value = improving;
    const header = el("tr", {}, ["run", "recipe", "classes", "test accuracy", ""].map(h => el("th", {}, h)));
    const rows = runs.map(r => {
      const actions = el("td", {});
      if (r.finished) {
        actions.append(button("open", () => details(r.name), {className: "open"}),
                       ...downloads.map(f => button(f.title, () => exportRun(r.name, f.name), {className: "download " + f.name})));
      } else if (r.resumable && !r.training) {
        actions.append(button("resume", () => resumeRun(r.name), {className: "resume"}));
      }
      if (!r.training) actions.append(button("delete", () => deleteRun(r.name), {className: "delete"}));
      const cell = (label, text, props = {}) => {
        const node = el("td", props, text);
        node.dataset.label = label;  // the heading shown beside the value at phone width
        return node;
      };
      return el("tr", {}, el("td", {className: "run-name"}, el("b", {}, r.name)), cell("recipe", `${r.recipe} (${r.model})`),
                cell("classes", r.classes.join(", ")),
                cell("test accuracy", r.finished ? accuracy(r) : r.training ? "training..." : "not finished"), actions);
    });
    $("runs-table").replaceChildren(header, ...rows);
    say("runs-message", runs.length ? "" : "No runs yet: teach one.", "info");
  } catch (error) { say("runs-message", error.message, "error"); }
}

// ------------------------------------------------------------------------------------ a run's page
// Its charts are drawn here as SVG from the run's numbers (they scale to any width and follow the
// page's colours); its model card comes as a tree of elements and text the server parsed its Markdown into.

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  for (const child of children.flat()) if (child) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// A line chart of `series` ([{name, className, points: [[x, y], ...]}]) over x and y in [lo, hi]; `mark`
// highlights one point ([x, y, label]). `xLabel`, `yLabel` name the axes; `xLog` plots log10(x).
function lineChart({series, xLabel, yLabel, yRange, xLog = false, mark = null, title, yFormat = pct}) {
  const W = 560, H = 260, L = 52, R = 16, T = 16, B = 44;
  const fx = x => xLog ? Math.log10(x) : x;
  const xs = series.flatMap(s => s.points.map(p => fx(p[0])));
  const [x0, x1] = [Math.min(...xs), Math.max(...xs) === Math.min(...xs) ? Math.min(...xs) + 1 : Math.max(...xs)];
  const [y0, y1] = yRange;
  const px = x => L + (fx(x) - x0) / (x1 - x0) * (W - L - R), py = y => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const chart = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title});
  chart.append(svg("title", {}, title));
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    chart.append(svg("line", {x1: L, x2: W - R, y1: py(y), y2: py(y), class: "axis"}),
                 svg("text", {x: L - 6, y: py(y) + 4, "text-anchor": "end"}, yFormat(y)));
  }
  const ticks = [...new Set(series.flatMap(s => s.points.map(p => p[0])))];
  const every = Math.ceil(ticks.length / 8);
  ticks.forEach((x, i) => { if (i % every === 0) chart.append(svg("text", {x: px(x), y: H - B + 16, "text-anchor": "middle"}, x)); });
  chart.append(svg("text", {x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle"}, xLabel),
               svg("text", {x: 12, y: T + (H - T - B) / 2, transform: `rotate(-90 12 ${T + (H - T - B) / 2})`, "text-anchor": "middle"}, yLabel));
  for (const s of series) {
    chart.append(svg("polyline", {points: s.points.map(p => `${px(p[0])},${py(p[1])}`).join(" "), class: s.className}));
    if (s.points.length <= 12) for (const p of s.points) chart.append(svg("circle", {cx: px(p[0]), cy: py(p[1]), r: 3.5, class: "dot"}));
  }
  if (mark) chart.append(svg("circle", {cx: px(mark[0]), cy: py(mark[1]), r: 6, class: "chosen"}),
                         svg("text", {x: px(mark[0]), y: py(mark[1]) - 10, "text-anchor": px(mark[0]) > W - 120 ? "end" : "middle"}, mark[2]));
  return chart;
}

// Per-class accuracy as bars with their 95% intervals (whiskers), 0-100%.
function classChart(perClass) {
  const names = Object.keys(perClass), W = 560, row = 34, L = 110, R = 120, H = names.length * row + 28;
  const x = v => L + v * (W - L - R);
  const chart = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": "test accuracy per class with 95% intervals"});
  chart.append(svg("title", {}, "test accuracy per class with 95% intervals"));
  names.forEach((name, i) => {
    const c = perClass[name], y = 8 + i * row;
    chart.append(svg("text", {x: L - 8, y: y + 16, "text-anchor": "end"}, name.length > 14 ? name.slice(0, 13) + "…" : name),
                 svg("rect", {x: L, y: y + 4, width: x(c.accuracy) - L, height: 16, rx: 4, class: "barfill"}),
                 svg("line", {x1: x(c.ci95[0]), x2: x(c.ci95[1]), y1: y + 12, y2: y + 12, class: "ci"}),
                 svg("line", {x1: x(c.ci95[0]), x2: x(c.ci95[0]), y1: y + 6, y2: y + 18, class: "ci"}),
                 svg("line", {x1: x(c.ci95[1]), x2: x(c.ci95[1]), y1: y + 6, y2: y + 18, class: "ci"}),
                 svg("text", {x: W - R + 6, y: y + 16}, `${pct(c.accuracy)} n=${c.n}`));
  });
  [0, 0.5, 1].forEach(v => chart.append(svg("text", {x: x(v), y: H - 4, "text-anchor": "middle"}, pct(v))));
  return chart;
}

// The confusion matrix as a table, each cell shaded by its share of its true class.
function confusionTable(classes, confusion) {
  const header = el("tr", {}, el("th", {}, "true \\ predicted"), classes.map(c => el("th", {}, c)));
  const rows = confusion.map((counts, i) => {
    const total = counts.reduce((a, b) => a + b, 0) || 1;
    return el("tr", {}, el("th", {}, classes[i]), counts.map((v, j) => {
      const cell = el("td", {}, v);
      cell.style.background = `color-mix(in srgb, ${i === j ? "var(--accent)" : "var(--warn)"} ${Math.round(60 * v / total)}%, transparent)`;
      return cell;
    }));
  });
  return el("div", {className: "scroll"}, el("table", {className: "confusion"}, header, rows));
}

// What the run's training curve is: a probe's is its search for C (held-out cross-entropy per C, the one
// chosen marked); a trained network's, accuracy per epoch.
function curveChart(run) {
  if (run.head && run.head.held_out_cross_entropy_by_c) {
    const points = Object.entries(run.head.held_out_cross_entropy_by_c).map(([c, loss]) => [Number(c), loss]);
    const top = Math.max(...points.map(p => p[1])) * 1.1;
    const chosen = points.find(p => p[0] === run.head.chosen_c);
    return lineChart({series: [{name: "held-out cross-entropy", className: "line-a", points}], xLog: true,
      xLabel: `C (inverse L2 strength), ${run.head.folds}`, yLabel: "held-out cross-entropy", yRange: [0, top],
      mark: chosen ? [chosen[0], chosen[1], `chosen C = ${chosen[0]}`] : null, title: "the probe's choice of C",
      yFormat: y => y.toFixed(2)});
  }
  const rows = (run.history || []).filter(r => r.epoch !== undefined);
  if (rows.length < 2) return null;
  const series = [{name: "train accuracy", className: "line-b", points: rows.filter(r => r.train_accuracy !== undefined).map(r => [r.epoch, r.train_accuracy])},
                  {name: "test accuracy", className: "line-a", points: rows.filter(r => r.test_accuracy !== undefined).map(r => [r.epoch, r.test_accuracy])}];
  return lineChart({series: series.filter(s => s.points.length), xLabel: "epoch", yLabel: "accuracy", yRange: [0, 1],
                    title: "accuracy per epoch: test (solid), train (dashed)"});
}

// The model card, from the tree the server parsed its Markdown into: elements by DOM calls, text as text.
const CARD_TAGS = new Set(["h1", "h2", "h3", "h4", "p", "ul", "ol", "li", "table", "thead", "tbody", "tr", "th", "td", "pre", "code", "strong", "em"]);
function cardNode(node) {
  if (node.text !== undefined) return document.createTextNode(node.text);
  const children = (node.children || []).map(cardNode);
  return CARD_TAGS.has(node.tag) ? el(node.tag, {}, children) : el("span", {}, children);
}

function stat(title, big, note) {
  return el("div", {className: "stat"}, el("div", {className: "count"}, title), el("div", {className: "big"}, big), el("div", {className: "note"}, note));
}

async function details(name) {
  try {
    const run = await call(runPath(name));
    const parts = [el("h3", {}, name)];
    if (run.finished) {
      const [low, high] = run.test_ci95;
      parts.push(el("div", {className: "stats"},
        stat("Test accuracy", pct(run.test_accuracy), `95% CI ${pct(low)}-${pct(high)}, n=${run.n_test}: photos kept aside from the same sources`),
        run.unseen ? stat("On sources it never saw", pct(run.unseen.accuracy), `95% CI ${pct(run.unseen.ci95[0])}-${pct(run.unseen.ci95[1])}, n=${run.unseen.n}: the figure that matters`) : null,
        stat("Recipe", run.recipe, run.model)));
      parts.push(el("h3", {}, "Per class"), classChart(run.per_class), confusionTable(run.classes, run.confusion));
    }
    const curve = curveChart(run);
    if (curve) parts.push(el("h3", {}, run.head ? "How C was chosen" : "Training"), curve);
    parts.push(...figures(name, run, ["top_losses.png"]));
    if (run.card_tree && run.card_tree.length) parts.push(el("div", {className: "model-card"}, run.card_tree.map(cardNode)));
    $("run-details").replaceChildren(...parts);
  } catch (error) { say("runs-message", error.message, "error"); }
}

let testFiles = [];  // the photos the Test page will label

function setTestFiles(files) {
  testFiles = [...files].filter(file => !file.type || file.type.startsWith("image/"));
  $("test-count").textContent = testFiles.length ? testFiles.map(file => file.name).join(", ") : "no photos yet";
}

// The probabilities as bars, most likely first: a label and how sure, readable at a phone's width.
function probabilityBars(probabilities) {
  return el("div", {className: "probs"}, Object.entries(probabilities).sort((x, y) => y[1] - x[1]).map(([c, p]) => {
    const fill = el("div", {className: "fill"});
    fill.style.width = pct(p);
    const track = el("div", {className: "track"}, fill);
    track.setAttribute("role", "img");
    track.setAttribute("aria-label", `${c} ${pct(p)}`);
    return el("div", {className: "prob"}, el("span", {}, c), track, el("span", {className: "value"}, pct(p)));
  }));
}

// One Test photo's card: the photo, its label and probabilities, how familiar it is, the training photos
// nearest to it, and where the model looked (Grad-CAM; occlusion on demand).
function addResult(where, r, file) {
  const head = el("div", {className: "result-head"},
    file ? el("img", {src: URL.createObjectURL(file), alt: ""}) : null,
    el("div", {}, el("div", {className: "file"}, r.file),
       r.error ? null : el("div", {className: "label"}, r.label, " ", el("span", {className: "count"}, pct(r.probability)))));
  if (r.error) {
    where.append(el("article", {className: "result failed"}, head, el("div", {className: "message error"}, r.error)));
    return;
  }
  const card = el("article", {className: "result"}, head);
  // a probe run says how familiar each photo is: one unlike every training photo is said so beside its
  // label (the label alone would look as sure as any other)
  if (r.familiar === false) {
    card.append(el("div", {className: "badge unfamiliar"}, `unlike anything it was taught (familiarity ${r.familiarity.toFixed(2)})`));
  }
  card.append(probabilityBars(r.probabilities));
  if (r.nearest && r.nearest.length) {  // the training photos nearest to this one: what the model compares it with
    card.append(el("div", {className: "nearest"}, el("div", {className: "nearest-title"}, "nearest training photos"),
      r.nearest.map(n => el("figure", {className: "near"},
        appImage(n.thumbnail, {alt: `training photo of a ${n.class}`}),
        el("figcaption", {}, `${n.class}, distance ${n.distance.toFixed(2)}`)))));
  }
  if (r.heatmap) {
    // occlusion takes 64 passes of the model: made only when asked for
    const more = button("occlusion map", async () => {
      more.disabled = true;
      more.textContent = "working...";
      try {
        const made = await call(r.occlusion, {method: "POST"});
        more.replaceWith(appImage(made.image, {className: "figure occlusion", alt: "where covering the photo lowers its class"}));
      } catch (error) { more.textContent = error.message; }
    }, {className: "occlude"});
    card.append(el("details", {className: "explain", open: true}, el("summary", {}, "Where it looked"),
      appImage(r.heatmap, {className: "figure heatmap", alt: "where the model looked"}), el("div", {className: "actions"}, more)));
  }
  where.append(card);
}

async function predict() {
  say("test-message", "", ""); $("test-result").replaceChildren();
  const run = $("test-run").value;
  if (!run) return say("test-message", "teach a run first", "error");
  if (!testFiles.length) return say("test-message", "drop or choose at least one photo first", "error");
  $("predict").disabled = true;
  const cards = $("test-result");
  // one photo a request: each result shows as soon as it is done, with a count, instead of one long
  // silent wait for the whole batch (issue 42)
  let done = 0;
  try {
    for (const file of testFiles) {
      say("test-message", `labelling photo ${done + 1} of ${testFiles.length} (${file.name}) ...`, "info");
      const form = new FormData();
      form.append("photos", file);
      for (const r of await call(runPath(run) + "/predict", {method: "POST", body: form})) addResult(cards, r, file);
      done += 1;
    }
    say("test-message", `${done} of ${testFiles.length} photos labelled`, "info");
  } catch (error) { say("test-message", error.message, "error"); }
  finally { $("predict").disabled = false; }
}

let live = null;  // the live-labelling loop running now (stopCamera ends it)

async function startLive() {
  say("test-message", "", "");
  const run = $("test-run").value;
  if (!run) return say("test-message", "teach a run first", "error");
  try { await openCamera($("test-video")); }
  catch (error) { return say("test-message", error.message, "error"); }
  $("live").hidden = false; $("test-camera").hidden = true;
  $("live-label").textContent = "looking...";
  const me = live = {run};
  while (live === me) {
    const started = performance.now();
    try {
      const form = new FormData();
      form.append("frame", await frame($("test-video")), "frame.jpg");
      const row = await call(runPath(run) + "/live", {method: "POST", body: form});
      if (live !== me) break;
      $("live-label").replaceChildren(el("b", {className: "live-class"}, row.label), " " + pct(row.probability),
        el("span", {className: "count"}, "  " + Object.entries(row.probabilities).map(([c, p]) => `${c} ${pct(p)}`).join(", ")));
    } catch (error) {
      if (live === me) { say("test-message", error.message, "error"); stopCamera(); }
      break;
    }
    await sleep(Math.max(0, LIVE_EVERY_MS - (performance.now() - started)));
  }
}

// ------------------------------------------------------------------------------------------- Improve
// Ask: the new camera's photos go up once; the server keeps them and answers with the few to label, as
// cards. Adapt: the labels given (none is fine) go back with the batch's name; a job makes the new run.

let improveFiles = [], asked = null;  // asked: {run, target, classes, rows, labels: {file: class}}

function setImproveFiles(files) {
  improveFiles = [...files].filter(file => !file.type || file.type.startsWith("image/"));
  $("improve-count").textContent = improveFiles.length ?
    `${improveFiles.length} photo${improveFiles.length === 1 ? "" : "s"}` : "no photos yet";
}

const shares = s => Object.entries(s).map(([c, p]) => `${c} ${pct(p)}`).join(", ");

// One photo to label: the photo, the run's guess, and a button per class (keys 1-9 on a focused card).
function askCard(row, index) {
  const card = el("div", {className: "ask-card", tabIndex: 0});
  card.setAttribute("aria-label", `photo ${index + 1}: ${row.file.split("/").pop()}, guess ${row.guess}`);
  const choose = label => {
    if (asked.labels[row.file] === label) delete asked.labels[row.file]; else asked.labels[row.file] = label;
    for (const b of card.querySelectorAll("button.class-choice")) {
      b.setAttribute("aria-pressed", String(b.dataset.label === asked.labels[row.file]));
    }
    card.classList.toggle("labelled", row.file in asked.labels);
    $("improve-go").textContent = `Adapt (${Object.keys(asked.labels).length} labelled)`;
  };
  const choices = asked.classes.map((label, i) => {
    const b = button(i < 9 ? `${i + 1} ${label}` : label, () => choose(label), {className: "class-choice", type: "button"});
    b.dataset.label = label;
    b.setAttribute("aria-pressed", "false");
    return b;
  });
  card.addEventListener("keydown", event => {
    const i = Number(event.key) - 1;
    if (event.target !== card || !(i >= 0 && i < Math.min(9, asked.classes.length))) return;
    event.preventDefault();
    choose(asked.classes[i]);
    const next = card.nextElementSibling;
    if (next) next.focus();
  });
  card.append(appImage(row.photo, {alt: row.file.split("/").pop()}),
    el("p", {className: "guess"}, `${index + 1}. guess ${row.guess} (${pct(row.confidence)})`),
    el("div", {className: "choices"}, choices));
  return card;
}

async function askPhotos() {
  say("improve-message", "", ""); $("improve-cards").replaceChildren(); $("improve-result").replaceChildren();
  $("improve-adapt").hidden = true; asked = null;
  const run = $("improve-run").value;
  if (!run) return say("improve-message", "train a run with the probe recipe first", "error");
  if (improveFiles.length < 2) return say("improve-message", "drop or choose at least 2 photos from the new camera", "error");
  const form = new FormData();
  for (const file of improveFiles) form.append("photos", file);
  form.append("k", $("improve-k").value);
  $("improve-ask").disabled = true;
  say("improve-message", `reading ${improveFiles.length} photos with ${run}'s networks...`, "info");
  try {
    const answer = await call(runPath(run) + "/ask", {method: "POST", body: form});
    asked = {run, ...answer, labels: {}};
    say("improve-message", `Of ${answer.n} new photos, ${run} would call ${shares(answer.estimated_shares)}. ` +
        `Label the ${answer.rows.length} below (any you can; none is fine too), then Adapt.`, "info");
    $("improve-cards").replaceChildren(...answer.rows.map(askCard));
    $("improve-name").value = `${run}-adapted`;
    $("improve-go").textContent = "Adapt (0 labelled)";
    $("improve-adapt").hidden = false;
  } catch (error) { say("improve-message", error.message, "error"); }
  finally { $("improve-ask").disabled = false; }
}

async function adaptRun() {
  if (!asked) return;
  const form = new FormData();
  form.append("target", asked.target);
  form.append("name", $("improve-name").value.trim());
  form.append("labels", JSON.stringify(asked.labels));
  const bar = $("improve-progress");
  $("improve-go").disabled = true; $("improve-result").replaceChildren();
  try {
    const job = await call(runPath(asked.run) + "/adapt", {method: "POST", body: form});
    bar.hidden = false; bar.removeAttribute("value");
    let status;
    for (;;) {
      await sleep(500);
      status = await call("/api/jobs/" + job.job);
      if (status.state !== "running") break;
      say("improve-message", `adapting ${asked.run} to the new photos as ${job.run}: ${Math.round(status.elapsed_s)} s`, "info");
    }
    if (status.state !== "done") throw new Error(status.error);
    showAdapted(job.run, status);
  } catch (error) { say("improve-message", error.message, "error"); }
  finally { bar.hidden = true; $("improve-go").disabled = false; }
}

function showAdapted(run, status) {
  const a = status.adapted;
  if (a.kept_original) {
    return say("improve-message", `Not adapted: ${a.why}. ${asked.run} stays as it is; label a few photos and try again.`, "info");
  }
  say("improve-message", `${run} is made.` + (status.warnings.length ? " " + status.warnings.join(" ") : ""), "info");
  const header = el("tr", {}, el("th", {}, "class"), el("th", {}, "before"), el("th", {}, "after"));
  const rows = Object.keys(a.shares_after).map(c => el("tr", {}, el("th", {}, c), el("td", {}, pct(a.shares_before[c] || 0)), el("td", {}, pct(a.shares_after[c]))));
  $("improve-result").replaceChildren(
    el("p", {}, el("b", {}, `${pct(a.changed)} of the ${a.n} new photos changed label`), ` (${a.labelled} labelled by you). ` +
       "Shares of the new photos by class, before and after:"),
    el("div", {className: "scroll"}, el("table", {className: "shares"}, header, rows)),
    el("p", {}, `On the original run's test photos (the same sources it was trained on, not the new camera): ${accuracy(status.metrics)}. ` +
       "To see how it does on the new camera, test it on labelled photos from it that were not used here: ",
       button("Test", () => { show("test"); $("test-run").value = run; }, {className: "link", type: "button"}),
       " one by one, or check both runs on them at once:"),
    checkBlock(asked.run, run));
  loadRuns();
}

// Check: labelled photos of the new camera (a drop per class) scored by the original and the adapted run,
// each with its interval, and the paired test on the photos where the two disagree.
function checkBlock(original, adapted) {
  const picked = asked.classes.map(() => []);
  const drops = asked.classes.map((label, i) => {
    const picker = el("input", {type: "file", accept: "image/*", multiple: true, hidden: true});
    const count = el("p", {className: "count"}, "no photos yet");
    const add = files => {
      picked[i].push(...[...files].filter(file => !file.type || file.type.startsWith("image/")));
      count.textContent = `${picked[i].length} photo${picked[i].length === 1 ? "" : "s"}`;
    };
    picker.addEventListener("change", () => { add(picker.files); picker.value = ""; });
    const zone = el("div", {className: "drop check-drop"}, el("p", {}, el("b", {}, label), ": drop photos, or ",
      button("choose", () => picker.click(), {type: "button"}), picker), count);
    dropTarget(zone, add);
    return zone;
  });
  const out = el("div", {className: "check-result", ariaLive: "polite"});
  const go = button("Check", async () => {
    const form = new FormData();
    form.append("other", adapted);
    picked.forEach((files, i) => { for (const file of files) form.append("class_" + i, file); });
    go.disabled = true;
    out.replaceChildren(el("div", {className: "message info"}, "scoring both runs..."));
    try {
      const r = await call(runPath(original) + "/check", {method: "POST", body: form});
      const header = el("tr", {}, ["run", "accuracy on these photos", "95% CI"].map(h => el("th", {}, h)));
      const rows = r.runs.map(x => el("tr", {}, el("th", {}, x.run), el("td", {}, pct(x.accuracy)),
                                      el("td", {}, `${pct(x.ci95[0])}-${pct(x.ci95[1])}`)));
      out.replaceChildren(el("table", {className: "check"}, header, rows),
        el("p", {}, `n=${r.n} photos. On the same photos, ${adapted} is right where ${original} was wrong on ${r.gained} ` +
           `and wrong where it was right on ${r.lost} (exact McNemar test, p = ${r.p_value.toFixed(3)}` +
           `${r.p_value <= 0.05 ? "" : ": no detectable difference at this sample size"}).`));
    } catch (error) { out.replaceChildren(el("div", {className: "message error"}, error.message)); }
    finally { go.disabled = false; }
  }, {className: "primary check-go"});
  return el("div", {className: "check-block"}, el("div", {className: "check-drops"}, drops), go, out);
}

for (const tab of document.querySelectorAll("nav button")) tab.addEventListener("click", () => show(tab.dataset.tab));
$("add-class").addEventListener("click", addClass);
$("train").addEventListener("click", teach);
$("cancel").addEventListener("click", cancelTraining);
$("predict").addEventListener("click", predict);
$("test-choose").addEventListener("click", () => $("test-files").click());
$("test-files").addEventListener("change", () => setTestFiles($("test-files").files));
dropTarget($("test-drop"), setTestFiles);
$("test-camera").addEventListener("click", startLive);
$("improve-choose").addEventListener("click", () => $("improve-files").click());
$("improve-files").addEventListener("change", () => setImproveFiles($("improve-files").files));
dropTarget($("improve-drop"), setImproveFiles);
$("improve-ask").addEventListener("click", askPhotos);
$("improve-go").addEventListener("click", adaptRun);
$("test-camera-stop").addEventListener("click", stopCamera);
$("test-camera").classList.add("use-camera");
// epochs belong to the scratch recipe only: a probe's head is solved to convergence
const epochsForMode = () => { $("epochs").disabled = document.querySelector("input[name=mode]:checked").value !== "scratch"; };
for (const choice of document.querySelectorAll("input[name=mode]")) choice.addEventListener("change", epochsForMode);
epochsForMode();
addClass(); addClass();
formats = call("/api/formats");
if (!TOKEN) {
  say("teach-message", "This app needs its launch token: open it with the link that `pasture app` printed in its " +
      "terminal (it ends in #token=...).", "error");
}
