// The overview: polls /api/overview and redraws the tables; refreshes the charts.
"use strict";
(function () {
  const POLL_MS = 2000, CHART_MS = 5000;
  const $ = (id) => document.getElementById(id);

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function bytes(n) {
    if (n === undefined || n === null) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + u[i];
  }
  function dur(s) {
    s = Math.max(0, Math.round(s));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + (s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d" + Math.floor((s % 86400) / 3600) + "h";
  }
  function ago(t, now) {
    if (!t) return "–";
    return dur((new Date(now) - new Date(t)) / 1000) + " ago";
  }
  function num(x) { return (Math.round(x * 100) / 100).toString(); }
  function taskLink(t) {
    const a = el("a", t.id);
    a.href = "/task/" + encodeURIComponent(t.id);
    return a;
  }
  function stateCell(s) {
    const td = el("td");
    td.appendChild(el("span", s, "state state-" + s));
    return td;
  }
  function row(tr, cells) {
    for (const c of cells) {
      if (c instanceof Node) {
        if (c.tagName === "TD") tr.appendChild(c);
        else { const td = el("td"); td.appendChild(c); tr.appendChild(td); }
      } else tr.appendChild(el("td", c));
    }
    return tr;
  }
  function fill(table, rows, empty, cols) {
    const tb = $(table).tBodies[0];
    tb.replaceChildren();
    if (rows.length === 0) {
      const tr = el("tr"), td = el("td", empty, "muted");
      td.colSpan = cols;
      tr.appendChild(td);
      tb.appendChild(tr);
      return;
    }
    for (const r of rows) tb.appendChild(r);
  }
  function taskRow(t) {
    const tr = el("tr");
    tr.dataset.task = t.id;
    tr.dataset.state = t.state;
    return tr;
  }
  function setOptions(sel, values) {
    const s = $(sel), cur = s.value;
    const want = [""].concat(values);
    const have = Array.from(s.options).map((o) => o.value);
    if (want.join("\u0000") === have.join("\u0000")) return;
    s.replaceChildren();
    for (const v of want) {
      const o = el("option", v === "" ? "all" : v);
      o.value = v;
      s.appendChild(o);
    }
    s.value = want.includes(cur) ? cur : "";
  }

  function render(ov) {
    const c = ov.cluster;
    $("c-scheduler").textContent = c.scheduler || "(single node: no scheduler)";
    $("c-version").textContent = c.version || "–";
    $("c-uptime").textContent = c.started_at && !c.scheduler_error ? dur(c.uptime_s) + " (since " + new Date(c.started_at).toLocaleString() + ")" : "–";
    $("c-mode").textContent = { scheduler: "this node holds the queue", node: "joined node", single: "single node" }[c.mode] || c.mode;
    const counts = ov.counts || {};
    $("c-counts").textContent = ["queued", "assigned", "running", "completed", "failed", "killed", "lost"]
      .map((s) => s + " " + (counts[s] || 0)).join(", ");

    const rs = c.raft;
    if (rs) {
      $("c-raft").textContent = (rs.healthy ? "healthy" : "UNHEALTHY") + ": " + rs.members.length + " member" + (rs.members.length === 1 ? "" : "s") +
        ", leader " + (rs.leader || "none") + ", term " + rs.term;
      $("raft-table").hidden = false;
      fill("raft-table", rs.members.map((m) => {
        const tr = el("tr");
        tr.dataset.member = m.name;
        tr.dataset.leader = m.leader ? "1" : "0";
        const ok = m.state !== "unreachable" && m.state !== "";
        return row(tr, [
          m.name,
          m.leader ? "leader" : "",
          el("span", m.state || "–", ok ? "up" : "down"),
          m.suffrage || "–",
          m.term || "–",
          (m.applied_index || 0) + " / " + (m.commit_index || 0),
          m.leader ? "–" : (m.last_contact || "–"),
          m.error ? m.api + " (" + m.error + ")" : (m.api || "–"),
        ]);
      }), "no members", 8);
    } else {
      $("c-raft").textContent = c.raft_error ? "cannot read: " + c.raft_error : (c.mode === "single" ? "(single node: no scheduler)" : "–");
      $("raft-table").hidden = true;
    }

    const al = $("alerts");
    al.replaceChildren();
    if (ov.alerts.length === 0) al.appendChild(el("li", "No alerts: every node up, origins healthy, caches within quota.", "ok"));
    for (const a of ov.alerts) {
      const li = el("li", a.text, a.level);
      li.dataset.kind = a.kind;
      al.appendChild(li);
    }

    fill("nodes-table", ov.nodes.map((n) => {
      const tr = el("tr");
      tr.dataset.node = n.name;
      tr.dataset.up = n.up ? "1" : "0";
      const st = n.cache;
      let origin = "–";
      if (st && st.origin_health) origin = st.origin_health.up ? "healthy" : "unhealthy: " + st.origin_health.last_error;
      else if (st) origin = "healthy";
      if (n.cache_error && n.up) origin = n.cache_error;
      row(tr, [
        n.name,
        el("span", n.up ? "up" : "down", n.up ? "up" : "down"),
        n.last_seen && n.heartbeat_age_s !== undefined ? dur(n.heartbeat_age_s) + " ago" : "–",
        num(n.free.cores) + " / " + num(n.total.cores),
        bytes(n.free.mem_bytes) + " / " + bytes(n.total.mem_bytes),
        n.free.gpus + " / " + n.total.gpus,
        n.running,
        st ? (st.no_cache ? "no cache" : bytes(st.cached_bytes) + " / " + bytes(st.quota_bytes)) : "–",
        n.hit_ratio !== undefined && n.hit_ratio !== null ? (n.hit_ratio * 100).toFixed(1) + "%" : "–",
        st && !st.no_cache ? bytes(st.peer_bytes || 0) + " / " + bytes(st.served_bytes || 0) : "–",
        origin,
      ]);
      return tr;
    }), "no nodes", 11);
    setOptions("f-node", ov.nodes.map((n) => n.name));
    setOptions("f-user", ov.users || []);

    fill("queued-table", ov.queued.map((t) => row(taskRow(t), [
      t.position, taskLink(t), t.name || "", t.user,
      num(t.cores || 0) + " cores, " + bytes(t.mem_bytes || 0) + (t.gpus ? ", " + t.gpus + " GPUs" : "") + (t.target_node ? " on " + t.target_node : ""),
      ago(t.submitted, ov.now), t.waiting || "",
    ])), "nothing queued", 7);
    fill("running-table", ov.running.map((t) => row(taskRow(t), [
      taskLink(t), t.name || "", t.user, t.node || "", stateCell(t.state),
      ago(t.started || t.assigned, ov.now),
    ])), "nothing running", 6);
    fill("recent-table", ov.recent.map((t) => row(taskRow(t), [
      taskLink(t), t.name || "", t.user, t.node || "", stateCell(t.state),
      t.exit_code === null || t.exit_code === undefined ? (t.signal || "–") : t.exit_code,
      ago(t.finished, ov.now),
    ])), "nothing ended yet", 7);
    $("updated").textContent = "updated " + new Date(ov.now).toLocaleTimeString();
  }

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  }

  async function poll() {
    const q = new URLSearchParams();
    for (const [k, id] of [["state", "f-state"], ["user", "f-user"], ["node", "f-node"]]) if ($(id).value) q.set(k, $(id).value);
    try {
      render(await getJSON("/api/overview?" + q.toString()));
      $("error").hidden = true;
    } catch (e) {
      $("error").textContent = "Cannot update: " + e.message;
      $("error").hidden = false;
    }
  }

  async function where(ev) {
    ev.preventDefault();
    const p = $("where-path").value.trim();
    try {
      const w = await getJSON("/api/where?path=" + encodeURIComponent(p));
      $("where-table").hidden = false;
      fill("where-table", w.nodes.map((n) => {
        const tr = el("tr");
        tr.dataset.node = n.node;
        return row(tr, [n.node, n.files, bytes(n.cached_bytes), bytes(n.size_bytes), n.whole_files, n.error || (n.files ? "" : "nothing cached")]);
      }), "no nodes", 6);
      const note = $("where-note");
      note.hidden = false;
      note.textContent = w.path + ": " + w.files + " cached file" + (w.files === 1 ? "" : "s") + " of " + bytes(w.size_bytes) + " in all. " +
        (w.source === "scheduler" ? "From the scheduler's inventory of the nodes' caches (sent with their heartbeats, a few seconds old): each file's cached bytes per node, not which ranges." :
          "From this node's cache.");
    } catch (e) {
      $("error").textContent = "Lookup failed: " + e.message;
      $("error").hidden = false;
    }
  }

  function charts() {
    for (const img of document.querySelectorAll("img.chart")) {
      img.src = img.src.replace(/\?.*$/, "") + "?t=" + Date.now();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const id of ["f-state", "f-user", "f-node"]) $(id).addEventListener("change", poll);
    $("where-form").addEventListener("submit", where);
    poll();
    setInterval(poll, POLL_MS);
    setInterval(charts, CHART_MS);
  });
})();
