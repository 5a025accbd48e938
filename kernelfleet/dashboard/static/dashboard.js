// kernelfleet admin dashboard: live tables fed by server-sent events, kernel actions, the
// kernelspec and environment forms' backend switch, and a job's progress. No framework, no
// build step.
//
// Every piece of text that comes from the server (user names, kernelspec names, kernel logs,
// reasons) is put into the page with textContent, never parsed as HTML.
"use strict";

(() => {
  const body = document.body;
  const admin = body.dataset.admin || "/admin";
  const csrf = body.dataset.csrf || "";
  const page = body.dataset.page || "";

  // -- helpers --------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "className") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, String(value));
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function duration(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min`;
    const h = Math.floor(m / 60);
    if (h < 48) return `${h} h ${String(m % 60).padStart(2, "0")} min`;
    return `${Math.floor(h / 24)} d ${h % 24} h`;
  }

  function mib(bytes) {
    return bytes === null || bytes === undefined ? "—" : `${Math.round(bytes / 1048576)} MiB`;
  }

  function when(ms) {
    return new Date(ms).toLocaleString();
  }

  function notice(text, level) {
    const box = document.getElementById("notices");
    if (!box) return;
    const item = el("p", { className: `notice ${level || "info"}`, role: "status" }, text);
    box.append(item);
    setTimeout(() => item.remove(), 8000);
  }

  async function call(method, url) {
    const response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
    });
    let data = {};
    try {
      data = await response.json();
    } catch (_) {
      data = {};
    }
    if (response.status === 401) {
      window.location.assign(`${admin}/login?next=${encodeURIComponent(location.pathname)}`);
    }
    if (!response.ok) throw new Error(data.message || `${response.status} ${response.statusText}`);
    return data;
  }

  function liveStatus(text, ok) {
    const badge = document.getElementById("live-status");
    if (!badge) return;
    badge.hidden = false;
    badge.textContent = text;
    badge.className = ok ? "live ok" : "live off";
  }

  function follow(handlers) {
    const source = new EventSource(`${admin}/api/events`);
    source.addEventListener("open", () => liveStatus("live", true));
    source.addEventListener("error", () => liveStatus("reconnecting…", false));
    for (const [name, handler] of Object.entries(handlers)) {
      source.addEventListener(name, (event) => handler(JSON.parse(event.data)));
    }
    source.addEventListener("event", (event) => {
      const e = JSON.parse(event.data);
      if (e.outcome !== "ok") {
        notice(`${e.action} ${e.outcome}: ${e.message || e.kernel_id}`, "error");
      }
    });
    return source;
  }

  // -- kernels page -----------------------------------------------------------------------

  function kernelsPage() {
    const table = document.getElementById("kernels");
    const tbody = table.querySelector("tbody");
    const rows = new Map(); // id -> {data, tr}
    const filter = document.getElementById("filter");
    const stateFilter = document.getElementById("state-filter");
    const empty = document.getElementById("no-kernels");
    const count = document.getElementById("kernel-count");
    let sortKey = "created";
    let sortDir = 1;

    function button(label, action, id, title) {
      return el("button", { type: "button", "data-action": action, "data-id": id, title }, label);
    }

    function setText(tr, cls, text, title) {
      const cell = tr.querySelector(`td.${cls}`);
      if (cell.textContent !== text) cell.textContent = text;
      if (title !== undefined && cell.title !== title) cell.title = title;
      return cell;
    }

    function fill(tr, k) {
      tr.dataset.created = String(k.created);
      tr.dataset.last = String(k.last_activity);
      tr.dataset.state = k.state;
      setText(tr, "owner", k.owner);
      setText(tr, "spec", k.spec, k.display_name);
      setText(tr, "profile", k.profile || "—");
      setText(tr, "host", k.host || "—");
      const state = setText(tr, "state", k.state, k.reason || "");
      state.className = `state state-${k.state}`;
      setText(tr, "connections", String(k.connections));
      setText(tr, "memory", mib(k.memory));
      const actions = tr.querySelector("td.actions");
      if (!actions.firstChild) {
        actions.append(
          button("Interrupt", "interrupt", k.id, "Interrupt what the kernel is running"),
          button("Restart", "restart", k.id, "Restart the kernel (same id, same host)"),
          button("Shut down", "shutdown", k.id, "Shut the kernel down"),
          button("Log", "log", k.id, "Show the end of the kernel's log"),
        );
      }
    }

    function blankRow(id) {
      const tr = el("tr", { "data-id": id });
      for (const cls of ["owner", "spec", "profile", "host", "state", "age", "idle",
        "connections", "memory", "actions"]) {
        tr.append(el("td", { className: cls }));
      }
      return tr;
    }

    function upsert(k) {
      let entry = rows.get(k.id);
      if (!entry) {
        entry = { data: k, tr: blankRow(k.id) };
        rows.set(k.id, entry);
      }
      entry.data = k;
      fill(entry.tr, k);
    }

    function matches(k) {
      const text = filter.value.trim().toLowerCase();
      if (stateFilter.value && k.state !== stateFilter.value) return false;
      if (!text) return true;
      return [k.owner, k.spec, k.display_name, k.host, k.profile, k.state, k.id]
        .some((v) => String(v || "").toLowerCase().includes(text));
    }

    function arrange() {
      const shown = [...rows.values()].filter((e) => matches(e.data));
      shown.sort((a, b) => {
        const x = a.data[sortKey];
        const y = b.data[sortKey];
        if (x === y) return a.data.created - b.data.created;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * sortDir;
      });
      const keep = new Set(shown.map((e) => e.tr));
      for (const tr of [...tbody.children]) if (!keep.has(tr)) tr.remove();
      for (const entry of shown) tbody.append(entry.tr); // moves, keeping each row's state
      empty.hidden = shown.length > 0;
      count.textContent = String(rows.size);
      tick();
    }

    function tick() {
      const now = Date.now();
      for (const { tr } of rows.values()) {
        setText(tr, "age", duration(now - Number(tr.dataset.created)));
        setText(tr, "idle", duration(now - Number(tr.dataset.last)));
      }
    }

    // The server-rendered rows are replaced by the snapshot: one way to draw a row.
    follow({
      snapshot(data) {
        rows.clear();
        tbody.replaceChildren();
        for (const k of data.kernels) upsert(k);
        arrange();
      },
      kernel(k) {
        upsert(k);
        arrange();
      },
      gone(id) {
        const entry = rows.get(id);
        if (entry) entry.tr.remove();
        rows.delete(id);
        arrange();
      },
    });
    setInterval(tick, 1000);
    filter.addEventListener("input", arrange);
    stateFilter.addEventListener("change", arrange);
    table.querySelectorAll("th button[data-sort]").forEach((b) => {
      b.addEventListener("click", () => {
        const key = b.dataset.sort;
        sortDir = key === sortKey ? -sortDir : 1;
        sortKey = key;
        table.querySelectorAll("th").forEach((th) => th.removeAttribute("aria-sort"));
        b.parentElement.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
        arrange();
      });
    });

    const done = { interrupt: "interrupted", restart: "restarted", shutdown: "shut down" };
    tbody.addEventListener("click", async (event) => {
      const target = event.target.closest("button[data-action]");
      if (!target) return;
      const { action, id } = target.dataset;
      if (action === "log") return showLog(id);
      if (action === "shutdown" && target.dataset.armed !== "yes") {
        target.dataset.armed = "yes"; // a second click within 5 s shuts it down
        target.textContent = "Confirm shut down";
        setTimeout(() => {
          target.dataset.armed = "";
          target.textContent = "Shut down";
        }, 5000);
        return;
      }
      target.disabled = true;
      try {
        await call("POST", `${admin}/api/kernels/${id}/${action}`);
        notice(`Kernel ${id.slice(0, 8)} ${done[action]}.`, "ok");
      } catch (err) {
        notice(`${action} failed: ${err.message}`, "error");
      } finally {
        target.disabled = false;
      }
    });

    const panel = document.getElementById("log-panel");
    async function showLog(id) {
      const entry = rows.get(id);
      document.getElementById("log-kernel").textContent =
        entry ? `${entry.data.spec} of ${entry.data.owner} (${id})` : id;
      const pre = document.getElementById("log-text");
      pre.textContent = "loading…";
      panel.hidden = false;
      try {
        const data = await call("GET", `${admin}/api/kernels/${id}/log`);
        pre.textContent = data.text || "(empty)";
      } catch (err) {
        pre.textContent = err.message;
      }
      panel.scrollIntoView({ block: "nearest" });
    }
    document.getElementById("log-close").addEventListener("click", () => {
      panel.hidden = true;
    });
  }

  // -- overview page ----------------------------------------------------------------------

  function overviewPage() {
    function counts(id, values) {
      const section = document.getElementById(id);
      const entries = Object.entries(values);
      const old = section.querySelector("table, p.empty");
      const next = entries.length
        ? el("table", { className: "counts" }, el("tbody", {}, ...entries.map(([name, n]) =>
          el("tr", {}, el("th", { scope: "row" }, name), el("td", {}, String(n))))))
        : el("p", { className: "empty" }, "none");
      old.replaceWith(next);
    }

    function rowsOf(id, items, columns, emptyText, attrs) {
      const tbody = document.querySelector(`#${id} tbody`);
      if (!items.length) {
        tbody.replaceChildren(el("tr", { className: "empty" },
          el("td", { colspan: String(columns) }, emptyText)));
        return;
      }
      tbody.replaceChildren(...items.map((item) => el("tr", attrs ? attrs(item) : {},
        ...item.cells.map((c) => (c instanceof Node ? c : el("td", {}, c))))));
    }

    function hostRow(h) {
      const health = el("td", { className: "health" }, h.health);
      if (h.reason) health.append(": ", el("span", { className: "reason" }, h.reason));
      const load = h.load1 === null ? "—" : `${h.load1.toFixed(2)} / ${h.cpus} CPUs`;
      const mem = h.mem_available === null || !h.mem_total ? "—"
        : `${Math.round(h.mem_available / 1048576)} of ${Math.round(h.mem_total / 1048576)} MiB`;
      const name = el("td", {}, h.host);
      if (h.hostname) name.append(" ", el("small", {}, `(${h.hostname})`));
      return { host: h.host, health: h.health, cells: [name, health, h.agent_version || "—",
        load, mem, String(h.kernels)] };
    }

    function render(o) {
      const total = document.getElementById("kernel-total");
      total.textContent = `${o.total} kernel${o.total === 1 ? "" : "s"}`;
      counts("by-state", o.by_state);
      counts("by-spec", o.by_spec);
      counts("by-host", o.by_host);
      rowsOf("hosts", o.hosts.map(hostRow), 6,
        "No SSH hosts known yet (they appear once a kernelspec names them).",
        (h) => ({ "data-host": h.host, className: `health-${h.health.replace(/ /g, "-")}` }));
      rowsOf("pools", o.pools.map((p) => ({ cells: [p.spec, String(p.size), String(p.ready),
        String(p.starting)] })), 4, "No warm pools (pool_sizes, KF_POOL_SIZES).");
      rowsOf("failures", o.failures.map((f) => ({ cells: [when(f.time), f.kernelspec,
        f.owner || f.actor, `${f.action} ${f.outcome} (${f.cause})`,
        el("td", { className: "reason" }, f.message)] })), 5,
        "No failed starts since the gateway started.");
    }

    document.querySelectorAll("#failures td[data-time]").forEach((td) => {
      td.textContent = when(Number(td.dataset.time));
    });
    follow({ snapshot: (data) => render(data.overview), overview: render });
  }

  // -- kernelspec form --------------------------------------------------------------------

  function specFormPage() {
    const select = document.getElementById("f-kind");
    if (!select) return;
    const show = () => {
      document.querySelectorAll("fieldset.kind-options").forEach((fs) => {
        fs.hidden = fs.dataset.kind !== select.value;
      });
    };
    select.addEventListener("change", show);
    show();
    const firstError = document.querySelector(".field.invalid input, .field.invalid select, " +
      ".field.invalid textarea");
    if (firstError) firstError.focus();
  }

  // -- a job's progress (kernelspec install, environment build) --------------------------

  function jobPage() {
    const box = document.getElementById("job");
    if (!box || box.dataset.done === "yes") return;
    const list = document.getElementById("job-lines");
    const status = document.getElementById("job-status");
    const source = new EventSource(box.dataset.events);
    // Every stream starts with every line so far: the list is drawn again from it (also after
    // a reconnect).
    source.addEventListener("open", () => list.replaceChildren());
    source.addEventListener("line", (event) => {
      const line = JSON.parse(event.data);
      const item = el("li", { className: `level-${line.level}` });
      if (line.host) item.append(el("b", {}, line.host), ": ");
      item.append(line.text);
      list.append(item);
    });
    source.addEventListener("done", (event) => {
      const { ok, error } = JSON.parse(event.data);
      source.close();
      box.dataset.done = "yes";
      const failed = box.dataset.failedText || `${box.dataset.failedPrefix || ""}${error || ""}`;
      status.textContent = ok ? box.dataset.okText : failed;
      status.className = ok ? "status-ok" : "status-failed";
    });
  }

  // -- environments -----------------------------------------------------------------------

  function envsPage() {
    // Remove asks for a second click within 5 s, as a kernel's shutdown does.
    document.querySelectorAll("button[data-confirm]").forEach((button) => {
      const label = button.textContent;
      button.addEventListener("click", (event) => {
        if (button.dataset.armed === "yes") return;
        event.preventDefault();
        button.dataset.armed = "yes";
        button.textContent = button.dataset.confirm;
        setTimeout(() => {
          button.dataset.armed = "";
          button.textContent = label;
        }, 5000);
      });
    });
  }

  const pages = {
    kernels: kernelsPage,
    overview: overviewPage,
    specs: () => { specFormPage(); jobPage(); },
    envs: () => { envsPage(); specFormPage(); jobPage(); },
  };
  if (pages[page]) pages[page]();
})();
