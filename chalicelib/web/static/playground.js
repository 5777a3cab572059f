// code-runner playground: plain JS, no dependencies. Job output is only ever set as text (textContent),
// never parsed as HTML. The API key lives in localStorage and travels in the Authorization header only.
"use strict";

(() => {
  const KEY_STORAGE = "coderunner.apiKey";
  const POLL_WAIT_S = 2; // short long-polls, so the queue position and ETA stay current
  const STATUS_REFRESH_MS = 3000;
  const MAX_POLL_FAILURES = 5;
  const TERMINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "error"]);
  const INDENT = "    ";
  const SAMPLES = {
    python3: 'import sys\n\nname = sys.stdin.read().strip() or "world"\nprint(f"Hello, {name}!")\n',
    node: 'const name = require("fs").readFileSync(0, "utf8").trim() || "world";\nconsole.log(`Hello, ${name}!`);\n',
    bash: 'read -r name || true\necho "Hello, ${name:-world}!"\n',
  };
  const STATUS_TEXT = {
    succeeded: "Succeeded",
    failed: "Failed",
    timed_out: "Timed out",
    cancelled: "Cancelled",
    error: "Platform error",
  };

  const $ = (id) => document.getElementById(id);
  // The API lives where the page was served from (also under API Gateway's /<stage>/ prefix).
  const base = new URL(".", window.location.href);
  let memoryKey = null; // when localStorage is unavailable (private modes)
  let runtimes = [];
  let currentJob = null;
  let statusTimer = null;

  // ---- API -------------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body, retryAfter) {
      const err = (body && typeof body === "object" && body.error) || {};
      super(err.message || (status ? `HTTP ${status}` : "the API could not be reached"));
      this.status = status;
      this.code = err.code || (status ? `http_${status}` : "network_error");
      this.details = err.details;
      this.retryAfter = retryAfter ? Number(retryAfter) : null;
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const key = storedKey();
    if (key) headers.Authorization = `Bearer ${key}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(new URL(path, base), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
      });
    } catch (exc) {
      const message = `the API could not be reached (${exc.message})`;
      throw new ApiError(0, { error: { code: "network_error", message } });
    }
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!resp.ok) throw new ApiError(resp.status, data, resp.headers.get("Retry-After"));
    return data;
  }

  const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const transient = (exc) => exc instanceof ApiError && (exc.status === 0 || exc.status === 429 || exc.status >= 503);

  // ---- key -------------------------------------------------------------------------------------------

  function storedKey() {
    try {
      return window.localStorage.getItem(KEY_STORAGE) || memoryKey;
    } catch {
      return memoryKey;
    }
  }

  function setKey(key) {
    memoryKey = key;
    try {
      if (key) window.localStorage.setItem(KEY_STORAGE, key);
      else window.localStorage.removeItem(KEY_STORAGE);
    } catch {
      /* memoryKey holds it for this page */
    }
    renderKey();
  }

  function renderKey() {
    const key = storedKey();
    $("key-form").hidden = Boolean(key);
    $("key-saved").hidden = !key;
    $("key-hint").textContent = key ? `…${key.slice(-4)}` : "";
  }

  function askForKey(message) {
    setKey(null);
    showError({ status: 401, code: "unauthorized", message });
    $("key-input").focus();
  }

  // ---- errors and status -----------------------------------------------------------------------------

  function detailLines(details) {
    if (details == null) return [];
    if (Array.isArray(details)) {
      return details.map((d) =>
        d && typeof d === "object" && "field" in d ? `${d.field}: ${d.message ?? ""}` : JSON.stringify(d),
      );
    }
    if (typeof details === "object") return Object.entries(details).map(([k, v]) => `${k}: ${JSON.stringify(v)}`);
    return [String(details)];
  }

  function showError(exc) {
    if (exc.status === 401 && exc.code === "unauthorized" && storedKey()) {
      askForKey(`The API refused the key (${exc.message}). Paste a valid key.`);
      return;
    }
    $("error-title").textContent = exc.status ? `${exc.status} ${exc.code}` : exc.code;
    const retry = exc.retryAfter ? ` Retry after ${exc.retryAfter} s.` : "";
    $("error-message").textContent = `${exc.message}${retry}`;
    const list = $("error-details");
    list.replaceChildren(...detailLines(exc.details).map((line) => el("li", {}, line)));
    $("error").hidden = false;
    $("error").scrollIntoView({ block: "nearest" });
  }

  function clearError() {
    $("error").hidden = true;
  }

  function setStatus(state, text) {
    const status = $("status");
    status.dataset.state = state;
    status.textContent = text;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
    node.append(...children.map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
    return node;
  }

  function seconds(s) {
    if (s == null) return "unknown";
    if (s < 1) return "under a second";
    if (s < 90) return `about ${Math.round(s)} s`;
    return `about ${Math.round(s / 60)} min`;
  }

  const dash = (v) => (v == null ? "—" : String(v));
  const ms = (v) => (v == null ? "—" : `${v} ms`);

  // ---- runtimes and the editor -----------------------------------------------------------------------

  async function loadRuntimes() {
    try {
      runtimes = (await api("GET", "v1/runtimes")).runtimes || [];
    } catch (exc) {
      showError(exc);
      return;
    }
    const select = $("runtime");
    select.replaceChildren(
      ...runtimes.map((r) => {
        const version = String(r.version).split(" (")[0]; // bash's build triple is noise here
        const label = `${r.name} — ${version}${r.available ? "" : " (unavailable)"}`;
        const option = el("option", { value: r.name, title: r.version }, label);
        option.disabled = !r.available;
        return option;
      }),
    );
    const preferred = runtimes.find((r) => r.available && r.name === "python3") || runtimes.find((r) => r.available);
    if (preferred) select.value = preferred.name;
    onRuntimeChange();
  }

  function selectedRuntime() {
    return runtimes.find((r) => r.name === $("runtime").value);
  }

  function onRuntimeChange() {
    const rt = selectedRuntime();
    const source = $("source");
    if (!source.value.trim() || Object.values(SAMPLES).includes(source.value)) source.value = SAMPLES[rt?.name] || "";
    if (!rt) return;
    const limits = rt.default_limits || {};
    const defaults = `default ${dash(limits.wall_time_s)} s, ${dash(limits.memory_mb)} MB`;
    $("runtime-info").textContent = `${rt.available ? "available" : "not available"} · ${defaults}`;
    $("wall-time").placeholder = limits.wall_time_s ?? "";
    $("memory").placeholder = limits.memory_mb ?? "";
  }

  function replaceSelection(textarea, text, start, end, select) {
    textarea.focus();
    textarea.setSelectionRange(start, end);
    // execCommand keeps the browser's undo history; setRangeText is the fallback.
    if (!document.execCommand || !document.execCommand("insertText", false, text)) {
      textarea.setRangeText(text, start, end, "end");
    }
    if (select) textarea.setSelectionRange(start, start + text.length);
  }

  // Tab indents (Shift+Tab dedents) in code fields; Esc then Tab moves focus on, so the keyboard is never trapped.
  function onCodeKey(ev) {
    const ta = ev.target;
    if (ev.key === "Escape") {
      ta.dataset.escaped = "1";
      return;
    }
    if (ev.key !== "Tab" || ev.ctrlKey || ev.altKey || ev.metaKey) {
      if (ev.key !== "Shift") delete ta.dataset.escaped;
      return;
    }
    if (ta.dataset.escaped) {
      delete ta.dataset.escaped;
      return;
    }
    ev.preventDefault();
    const { selectionStart: start, selectionEnd: end, value } = ta;
    if (!ev.shiftKey && !value.slice(start, end).includes("\n")) {
      replaceSelection(ta, INDENT, start, end, false);
      return;
    }
    const lineStart = value.lastIndexOf("\n", start - 1) + 1;
    const lines = value.slice(lineStart, end).split("\n");
    const changed = lines.map((line) => (ev.shiftKey ? line.replace(/^( {1,4}|\t)/, "") : INDENT + line));
    replaceSelection(ta, changed.join("\n"), lineStart, end, start !== end);
  }

  function addTest(stdin = "", expected = "") {
    const item = $("test-template").content.firstElementChild.cloneNode(true);
    item.querySelector(".test-stdin").value = stdin;
    item.querySelector(".test-expected").value = expected;
    item.querySelector(".remove-test").addEventListener("click", () => {
      item.remove();
      renumberTests();
    });
    item.querySelectorAll("textarea").forEach((ta) => ta.addEventListener("keydown", onCodeKey));
    $("tests").append(item);
    renumberTests();
    item.querySelector(".test-stdin").focus();
  }

  function renumberTests() {
    const items = [...$("tests").children];
    items.forEach((item, i) => {
      item.querySelector(".test-stdin").setAttribute("aria-label", `Test ${i + 1} input`);
      item.querySelector(".test-expected").setAttribute("aria-label", `Test ${i + 1} expected output`);
      item.querySelector(".remove-test").setAttribute("aria-label", `Remove test ${i + 1}`);
    });
    $("tests-count").textContent = items.length ? `(${items.length})` : "";
  }

  function numberField(id, name, limits, problems) {
    const raw = $(id).value.trim();
    if (!raw) return;
    const value = Number(raw);
    if (Number.isFinite(value) && value > 0) limits[name] = value;
    else problems.push({ field: `limits.${name}`, message: "must be a positive number" });
  }

  function buildJob() {
    const job = { runtime: $("runtime").value, source: $("source").value, stdin: $("stdin").value };
    const limits = {};
    const problems = [];
    numberField("wall-time", "wall_time_s", limits, problems);
    numberField("memory", "memory_mb", limits, problems);
    if (problems.length) {
      showError({ status: 0, code: "invalid_limits", message: "Fix the limits before running.", details: problems });
      return null;
    }
    if (Object.keys(limits).length) job.limits = limits;
    const tests = [...$("tests").children].map((item) => ({
      stdin: item.querySelector(".test-stdin").value,
      expected_stdout: item.querySelector(".test-expected").value,
    }));
    if (tests.length) job.tests = tests;
    return job;
  }

  // ---- running a job ---------------------------------------------------------------------------------

  function setRunning(running) {
    $("run").disabled = running;
    $("cancel").hidden = !running;
    $("cancel").disabled = false;
  }

  function showProgress(job) {
    if (job.status === "queued") {
      const where = job.position ? `position ${job.position} (${job.position} ahead)` : "the front of the queue";
      setStatus("queued", `Queued at ${where}; starts in ${seconds(job.estimated_wait_s)}.`);
    } else if (job.status === "running") {
      setStatus("running", job.attempts > 1 ? `Running (attempt ${job.attempts})…` : "Running…");
    }
  }

  async function poll(job) {
    let failures = 0;
    while (!TERMINAL.has(job.status)) {
      try {
        job = await api("GET", `v1/jobs/${encodeURIComponent(job.id)}?wait=${POLL_WAIT_S}`);
        failures = 0;
        showProgress(job);
      } catch (exc) {
        failures += 1;
        if (!transient(exc) || failures >= MAX_POLL_FAILURES) throw exc;
        setStatus("queued", `Connection trouble (${exc.message}); retrying…`);
        await delay(1000 * (exc.retryAfter || failures));
      }
    }
    return job;
  }

  async function run() {
    if (currentJob !== null || $("run").disabled) return;
    clearError();
    if (!storedKey()) {
      askForKey("Paste an API key to run code.");
      return;
    }
    const job = buildJob();
    if (!job) return;
    setRunning(true);
    $("result").hidden = true;
    setStatus("queued", "Submitting…");
    $("status").scrollIntoView({ block: "nearest" }); // below the editor on a phone
    try {
      const accepted = await api("POST", "v1/jobs", job);
      currentJob = accepted.id;
      showProgress(accepted);
      showResult(await poll(accepted));
    } catch (exc) {
      setStatus("idle", `Not run: ${exc.message}`);
      showError(exc);
    } finally {
      currentJob = null;
      setRunning(false);
    }
  }

  async function cancel() {
    if (currentJob === null) return;
    $("cancel").disabled = true;
    try {
      await api("DELETE", `v1/jobs/${encodeURIComponent(currentJob)}`);
    } catch (exc) {
      if (exc.status !== 409) showError(exc); // 409: it finished first; the poll shows the verdict
    }
  }

  function statusLine(job) {
    const r = job.result || {};
    const why = r.reason ? ` (${r.reason}${r.signal ? `, ${r.signal}` : ""})` : "";
    const took = r.wall_ms != null ? ` in ${r.wall_ms} ms` : "";
    const extra = job.status === "error" && job.error ? `: ${job.error}` : "";
    return `${STATUS_TEXT[job.status] || job.status}${why}${took}${extra}.`;
  }

  function showResult(job) {
    const r = job.result || {};
    setStatus(job.status, statusLine(job));
    const verdict = $("r-status");
    verdict.textContent = job.status;
    verdict.className = `verdict-${job.status}`;
    $("r-exit").textContent = dash(r.exit_code);
    $("r-signal").textContent = dash(r.signal);
    $("r-reason").textContent = dash(r.reason);
    $("r-wall").textContent = ms(r.wall_ms);
    $("r-cpu").textContent = ms(r.cpu_ms);
    $("r-rss").textContent = r.max_rss_kb == null ? "—" : `${(r.max_rss_kb / 1024).toFixed(1)} MB`;
    $("r-queue").textContent = ms(job.queue_wait_ms);
    $("stdout").textContent = r.stdout ?? "";
    $("stderr").textContent = r.stderr ?? "";
    $("stdout-trunc").hidden = !r.stdout_truncated;
    $("stderr-trunc").hidden = !r.stderr_truncated;
    showVerdicts(r.tests);
    $("result").hidden = false;
  }

  function showVerdicts(tests) {
    $("verdicts").hidden = !tests;
    if (!tests) return;
    $("verdicts-summary").textContent = `${tests.accepted} of ${tests.total} accepted`;
    $("verdict-rows").replaceChildren(
      ...(tests.cases || []).map((c, i) => {
        const output = el("pre", {}, c.stdout ?? "");
        const cell = el("td", {}, output);
        if (c.expected_stdout != null) cell.append(el("pre", { class: "muted" }, `expected: ${c.expected_stdout}`));
        return el(
          "tr",
          {},
          el("td", { class: "num" }, c.index ?? i + 1),
          el("td", { class: `verdict-${c.verdict}` }, c.verdict),
          el("td", { class: "num" }, dash(c.exit_code)),
          el("td", { class: "num" }, ms(c.wall_ms)),
          cell,
        );
      }),
    );
  }

  // ---- queue and usage -------------------------------------------------------------------------------

  function resetText(epochSeconds) {
    if (epochSeconds == null) return "—";
    const when = new Date(epochSeconds * 1000);
    const left = Math.max(0, Math.round(epochSeconds - Date.now() / 1000));
    let inText = `${Math.round(left / 3600)} h`;
    if (left < 120) inText = `${left} s`;
    else if (left < 7200) inText = `${Math.round(left / 60)} min`;
    return `${when.toLocaleTimeString()} (in ${inText})`;
  }

  function renderQueue(queue, myTier) {
    $("queue-rows").replaceChildren(
      ...Object.entries(queue.tiers || {}).map(([tier, t]) =>
        el(
          "tr",
          tier === myTier ? { class: "mine" } : {},
          el("th", { scope: "row" }, tier === myTier ? `${tier} (yours)` : tier),
          el("td", { class: "num" }, dash(t.queued)),
          el("td", { class: "num" }, dash(t.running)),
          el("td", { class: "num" }, dash(t.capacity)),
          el("td", { class: "num" }, dash(t.queue_cap)),
          el("td", { class: "num" }, seconds(t.estimated_wait_s)),
        ),
      ),
    );
  }

  function usageRow(label, limit, used, remaining, reset) {
    return el(
      "tr",
      {},
      el("th", { scope: "row" }, label),
      el("td", { class: "num" }, dash(limit)),
      el("td", { class: "num" }, dash(used)),
      el("td", { class: "num" }, dash(remaining)),
      el("td", {}, resetText(reset)),
    );
  }

  function renderUsage(usage) {
    const m = usage.per_minute || {};
    const d = usage.per_day || {};
    const c = usage.concurrency || {};
    $("usage-key").textContent = `Key ${usage.key_id} · owner ${usage.owner} · tier ${usage.tier}`;
    $("usage-rows").replaceChildren(
      usageRow("Jobs per minute", m.limit, m.used, m.remaining, m.reset),
      usageRow("Jobs per day (UTC)", d.limit, d.used, d.remaining, d.reset),
      usageRow("Running at once", c.limit, c.running, c.limit == null ? null : Math.max(0, c.limit - c.running), null),
    );
    $("usage-caps").textContent =
      `Per job: at most ${dash(usage.max_wall_time_s)} s wall time and ${dash(usage.max_memory_mb)} MB of memory.`;
  }

  async function refreshStatus() {
    if (!storedKey()) {
      $("status-updated").textContent = "Paste an API key to see the queues and your usage.";
      return;
    }
    try {
      const [queue, usage] = await Promise.all([api("GET", "v1/queue"), api("GET", "v1/usage")]);
      renderUsage(usage);
      renderQueue(queue, usage.tier);
      $("status-updated").textContent = `Updated ${new Date().toLocaleTimeString()}; refreshed every few seconds.`;
    } catch (exc) {
      showError(exc);
    }
  }

  function statusVisible() {
    return !$("panel-status").hidden && document.visibilityState === "visible";
  }

  function scheduleStatus() {
    clearTimeout(statusTimer);
    statusTimer = null;
    if (!statusVisible()) return;
    refreshStatus().finally(() => {
      if (statusVisible()) statusTimer = setTimeout(scheduleStatus, STATUS_REFRESH_MS);
    });
  }

  // ---- tabs ------------------------------------------------------------------------------------------

  function selectTab(tab) {
    clearError();
    for (const t of document.querySelectorAll('[role="tab"]')) {
      const selected = t === tab;
      t.setAttribute("aria-selected", String(selected));
      t.tabIndex = selected ? 0 : -1;
      $(t.getAttribute("aria-controls")).hidden = !selected;
    }
    tab.focus();
    scheduleStatus();
  }

  function onTabKey(ev) {
    const tabs = [...document.querySelectorAll('[role="tab"]')];
    const i = tabs.indexOf(ev.target);
    const next = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[ev.key];
    if (next === undefined) return;
    ev.preventDefault();
    selectTab(tabs[(next + tabs.length) % tabs.length]);
  }

  // ---- wiring ----------------------------------------------------------------------------------------

  function init() {
    renderKey();
    $("key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      $("key-input").value = "";
      setKey(key);
      clearError();
      scheduleStatus();
    });
    $("key-forget").addEventListener("click", () => {
      setKey(null);
      $("key-input").focus();
      scheduleStatus();
    });
    $("error-dismiss").addEventListener("click", clearError);
    $("runtime").addEventListener("change", onRuntimeChange);
    $("source").addEventListener("keydown", onCodeKey);
    $("stdin").addEventListener("keydown", onCodeKey);
    $("add-test").addEventListener("click", () => addTest());
    $("run-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      run();
    });
    $("cancel").addEventListener("click", cancel);
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey) && !$("panel-run").hidden) {
        ev.preventDefault();
        run();
      }
    });
    for (const tab of document.querySelectorAll('[role="tab"]')) {
      tab.addEventListener("click", () => selectTab(tab));
      tab.addEventListener("keydown", onTabKey);
    }
    document.addEventListener("visibilitychange", scheduleStatus);
    loadRuntimes();
  }

  init();
})();
