// The durable web view's script: keeps the pages current and sends the run page's actions.
// Values from the store are written with textContent only, never as HTML.
"use strict";

const REFRESH_MS = 2000;
const root = document.body.dataset.root || "";

function runHref(id) {
  return root + "/run?id=" + encodeURIComponent(id);
}

function shortTime(iso) {
  // "2025-06-01T12:00:03.123456+00:00" -> "2025-06-01 12:00:03" (UTC, as the server renders)
  return iso ? iso.slice(0, 19).replace("T", " ") : "";
}

function el(tag, props, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children || []) node.append(child);
  return node;
}

function statusBadge(status) {
  return el("span", { class: "status s-" + status, text: status.replace(/_/g, " ") });
}

function timeCell(iso) {
  if (!iso) return el("td", {}, [el("span", { class: "none", text: "—" })]);
  return el("td", {}, [el("time", { datetime: iso, text: shortTime(iso) })]);
}

// -- the runs page ---------------------------------------------------------------------------

function runRow(run) {
  const idCell = el("td", { class: "id" }, [el("a", { href: runHref(run.id), text: run.id })]);
  if (run.parent_id) {
    idCell.append(el("span", { class: "muted child-of", text: "child of " + run.parent_id }));
  }
  return el("tr", { "data-id": run.id }, [
    idCell,
    el("td", { text: run.workflow }),
    el("td", {}, [statusBadge(run.status)]),
    timeCell(run.created_at),
    timeCell(run.updated_at),
    el("td", { class: "num", text: String(run.attempts) }),
  ]);
}

function olderHref(nextCursor) {
  const params = new URLSearchParams(location.search);
  const current = params.get("cursor") || "";
  params.set("cursor", nextCursor);
  params.append("back", current);
  return root + "/?" + params.toString();
}

async function refreshRuns() {
  const table = document.getElementById("runs");
  const auto = document.getElementById("auto-refresh");
  if (!table || (auto && !auto.checked)) return;
  const response = await fetch(table.dataset.api, { headers: { Accept: "application/json" } });
  if (!response.ok) return;
  const page = await response.json();
  table.tBodies[0].replaceChildren(...page.runs.map(runRow));
  document.getElementById("runs-empty").hidden = page.runs.length > 0;
  const pager = document.getElementById("pager");
  let older = pager.querySelector('a[rel="next"]');
  if (page.next_cursor) {
    if (!older) {
      older = el("a", { rel: "next", text: "Older →" });
      pager.append(older);
    }
    older.setAttribute("href", olderHref(page.next_cursor));
  } else if (older) {
    older.remove();
  }
  stamp();
}

function stamp() {
  const refreshed = document.getElementById("refreshed");
  if (refreshed) refreshed.textContent = "updated " + new Date().toLocaleTimeString();
}

// -- the run page ----------------------------------------------------------------------------

async function refreshRun() {
  const body = document.body;
  const response = await fetch(body.dataset.api, { headers: { Accept: "application/json" } });
  if (!response.ok) return;
  const run = await response.json();
  const finished = body.dataset.finished === "true";
  if (run.signature === body.dataset.signature && finished) return;
  // Changed, or still running (its open steps grow): take the live parts of a fresh page.
  const page = await fetch(location.href, { headers: { Accept: "text/html" } });
  if (!page.ok) return;
  const fresh = new DOMParser().parseFromString(await page.text(), "text/html");
  for (const part of document.querySelectorAll("[data-live]")) {
    const replacement = fresh.getElementById(part.id);
    if (replacement) part.replaceWith(document.adoptNode(replacement));
  }
  body.dataset.signature = fresh.body.dataset.signature || "";
  body.dataset.finished = fresh.body.dataset.finished || "false";
}

function showResult(ok, text) {
  const out = document.getElementById("action-result");
  out.textContent = text;
  out.className = ok ? "ok" : "error";
}

async function act(verb, extra) {
  const payload = Object.assign({ id: document.body.dataset.runId }, extra || {});
  let response;
  try {
    response = await fetch(root + "/api/actions/" + verb, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Durable-UI": "1" },
      body: JSON.stringify(payload),
    });
  } catch (error) {
    showResult(false, verb + " failed: the server did not answer (" + error + ")");
    return;
  }
  let answer = {};
  try {
    answer = await response.json();
  } catch (error) {
    answer = { error: "the server answered " + response.status };
  }
  if (response.ok && answer.ok) {
    showResult(true, answer.message);
  } else {
    showResult(false, verb + " refused: " + (answer.error || "HTTP " + response.status));
  }
  refreshRun();
}

function setUpActions() {
  for (const button of document.querySelectorAll("button[data-action]")) {
    button.addEventListener("click", () => {
      const verb = button.dataset.action;
      const extra = {};
      if (verb === "retry") {
        extra.after_compensation = document.getElementById("after-compensation").checked;
      }
      act(verb, extra);
    });
  }
  const form = document.getElementById("signal-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    act("signal", { name: data.get("name"), payload: data.get("payload") });
  });
}

function every(task) {
  let busy = false;
  setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try {
      await task();
    } catch (error) {
      // The server is restarting or gone: try again at the next tick.
    } finally {
      busy = false;
    }
  }, REFRESH_MS);
}

if (document.body.dataset.page === "runs") {
  stamp();
  every(refreshRuns);
} else if (document.body.dataset.page === "run") {
  setUpActions();
  every(refreshRun);
}
