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

async function call(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({error: `the server answered ${response.status}`}));
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}`);
  return body;
}

function show(name) {
  for (const id of ["teach", "test", "runs"]) {
    $(id).classList.toggle("on", id === name);
    $("tab-" + id).classList.toggle("on", id === name);
  }
  if (name !== "teach") loadRuns();
}

function addClass() {
  $("classes").append(el("div", {className: "class-row"},
    el("input", {className: "class-name", placeholder: "class name", maxLength: 100}),
    el("input", {className: "class-files", type: "file", accept: "image/*", multiple: true})));
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
  for (const row of document.querySelectorAll(".class-row")) {
    const name = row.querySelector(".class-name").value.trim();
    const files = row.querySelector(".class-files").files;
    if (!name && !files.length) continue;
    for (const file of files) form.append("class_" + names.length, file);
    names.push(name);
  }
  form.append("classes", JSON.stringify(names));
  form.append("name", $("run-name").value.trim());
  form.append("mode", document.querySelector("input[name=mode]:checked").value);
  const mode = document.querySelector("input[name=mode]:checked").value;
  if ($("epochs").value && mode === "tiny") form.append("epochs", $("epochs").value);  // the accurate mode has none
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
  const testLink = el("a", {className: "link"}, "Test");
  testLink.addEventListener("click", () => show("test"));
  const header = el("tr", {}, el("th", {}, "true \\ predicted"), metrics.classes.map(c => el("th", {}, c)));
  const rows = metrics.confusion.map((counts, i) => el("tr", {}, el("th", {}, metrics.classes[i]),
                                                        counts.map(v => el("td", {}, v))));
  $(where).replaceChildren(
    el("p", {}, el("b", {}, `Test accuracy: ${accuracy(metrics)}`),
       " on photos kept aside from the same uploads. Photos from elsewhere (another camera, place or season) are the " +
       "honest test: drop some in ", testLink, "."),
    el("table", {}, header, rows),
    el("img", {className: "figure", src: runPath(run) + "/files/curves.png", alt: "learning curves"}));
}

async function exportRun(name) {
  say("runs-message", `exporting ${name}...`, "info");
  try {
    const made = await call(runPath(name) + "/export", {method: "POST"});
    // the file name as the server gives it (plain characters): quotes or '?' in a download name cancel it
    const link = el("a", {href: made.file, download: "", hidden: true});
    document.body.append(link); link.click(); link.remove();
    say("runs-message", `${name}.onnx: ${(made.bytes / 1e6).toFixed(1)} MB`, "info");
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
    const runs = await call("/api/runs");
    const select = $("test-run"), chosen = select.value;
    select.replaceChildren(...runs.filter(r => r.finished).map(r => el("option", {value: r.name}, r.name)));
    if (chosen) select.value = chosen;
    const header = el("tr", {}, ["run", "recipe", "classes", "test accuracy", ""].map(h => el("th", {}, h)));
    const rows = runs.map(r => {
      const actions = el("td", {});
      if (r.finished) {
        actions.append(button("open", () => details(r.name), {className: "open"}),
                       button("ONNX", () => exportRun(r.name), {className: "onnx"}));
      } else if (r.resumable && !r.training) {
        actions.append(button("resume", () => resumeRun(r.name), {className: "resume"}));
      }
      if (!r.training) actions.append(button("delete", () => deleteRun(r.name), {className: "delete"}));
      return el("tr", {}, el("td", {className: "run-name"}, r.name), el("td", {}, `${r.recipe} (${r.model})`),
                el("td", {}, r.classes.join(", ")),
                el("td", {}, r.finished ? accuracy(r) : r.training ? "training..." : "not finished"), actions);
    });
    $("runs-table").replaceChildren(header, ...rows);
    say("runs-message", runs.length ? "" : "No runs yet: teach one.", "info");
  } catch (error) { say("runs-message", error.message, "error"); }
}

async function details(name) {
  try {
    const run = await call(runPath(name));
    const figure = (file, alt) => {
      const image = el("img", {className: "figure", src: `${runPath(name)}/files/${file}`, alt});
      image.addEventListener("error", () => image.remove());
      return image;
    };
    $("run-details").replaceChildren(el("h3", {}, name), figure("curves.png", "learning curves"),
      figure("confusion.png", "confusion matrix"), figure("top_losses.png", "top losses"), el("pre", {}, run.card));
  } catch (error) { say("runs-message", error.message, "error"); }
}

async function predict() {
  say("test-message", "", ""); $("test-result").replaceChildren();
  const run = $("test-run").value, files = $("test-files").files;
  if (!run) return say("test-message", "teach a run first", "error");
  const form = new FormData();
  for (const file of files) form.append("photos", file);
  $("predict").disabled = true;
  try {
    const rows = await call(runPath(run) + "/predict", {method: "POST", body: form});
    const table = el("table", {}, el("tr", {}, ["photo", "label", "probabilities"].map(h => el("th", {}, h))));
    for (const r of rows) {
      if (r.error) {
        table.append(el("tr", {}, el("td", {}, r.file), el("td", {colSpan: 2, className: "error"}, r.error)));
        continue;
      }
      table.append(el("tr", {}, el("td", {}, r.file),
        el("td", {className: "label"}, el("b", {}, r.label), " " + pct(r.probability)),
        el("td", {}, Object.entries(r.probabilities).map(([c, p]) => `${c} ${pct(p)}`).join(", "))));
      if (r.heatmap) {
        table.append(el("tr", {}, el("td", {colSpan: 3},
          el("img", {className: "figure heatmap", src: r.heatmap, alt: "where the model looked"}))));
      }
    }
    $("test-result").replaceChildren(table);
  } catch (error) { say("test-message", error.message, "error"); }
  finally { $("predict").disabled = false; }
}

for (const tab of document.querySelectorAll("nav button")) tab.addEventListener("click", () => show(tab.dataset.tab));
$("add-class").addEventListener("click", addClass);
$("train").addEventListener("click", teach);
$("cancel").addEventListener("click", cancelTraining);
$("predict").addEventListener("click", predict);
// epochs belong to the tiny mode only: the accurate mode's head is solved to convergence
const epochsForMode = () => { $("epochs").disabled = document.querySelector("input[name=mode]:checked").value !== "tiny"; };
for (const choice of document.querySelectorAll("input[name=mode]")) choice.addEventListener("change", epochsForMode);
epochsForMode();
addClass(); addClass();
