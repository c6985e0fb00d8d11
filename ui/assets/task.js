// A task's page: polls /api/task/ID, follows its log as it grows, and kills it (admins).
"use strict";
(function () {
  const POLL_MS = 1000;
  const $ = (id) => document.getElementById(id);
  const meta = (n) => document.querySelector('meta[name="' + n + '"]').content;
  const id = meta("eddy-task");
  const offsets = { stdout: 0, stderr: 0 };
  let ended = false, drained = false;

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function bytes(n) {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + u[i];
  }
  function when(t) { return t ? new Date(t).toLocaleString() : "–"; }

  async function call(url, opts) {
    const r = await fetch(url, Object.assign({ credentials: "same-origin", cache: "no-store" }, opts || {}));
    if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
    const body = await r.json().catch(() => ({}));
    if (!r.ok) { const e = new Error(body.error || r.statusText); e.status = r.status; throw e; }
    return body;
  }

  function render(t) {
    $("t-name").textContent = t.name ? "“" + t.name + "”" : "";
    const st = $("t-state");
    st.textContent = t.state;
    st.className = "state state-" + t.state;
    st.dataset.state = t.state;
    const facts = [
      ["Command", (t.command || []).join(" ")],
      ["User", t.user + " (uid " + t.uid + ", gid " + t.gid + ")"],
      ["Asks", (t.cores || 0) + " cores, " + bytes(t.mem_bytes || 0) + " memory, " + (t.gpus || 0) + " GPUs"],
      ["Target node", t.target_node || "any"],
      ["Labels", t.labels ? Object.entries(t.labels).map(([k, v]) => k + "=" + v).join(", ") : "–"],
      ["Inputs", (t.inputs || []).join(", ") || "–"],
      ["Environment", (t.env || []).join(" ") || "–"],
      ["Container", t.container_env || t.image || "–"],
      ["Priority / retries", (t.priority || 0) + " / " + (t.retries || 0)],
      ["Node", t.node || "–"],
      ["Attempts", t.attempts],
      ["Submitted", when(t.submitted)],
      ["Started", when(t.started)],
      ["Finished", when(t.finished)],
      ["Exit code", t.exit_code === null || t.exit_code === undefined ? "–" : t.exit_code],
      ["Signal", t.signal || "–"],
      ["Error", t.error || "–"],
      ["Kill asked", t.kill_asked ? "yes" : "no"],
    ];
    const dl = $("t-facts");
    dl.replaceChildren();
    for (const [k, v] of facts) { dl.appendChild(el("dt", k)); dl.appendChild(el("dd", v)); }
    $("kill").hidden = !t.can_kill;
    const p = t.placement;
    if (p) {
      $("p-reason").textContent = "On " + p.node + " at " + when(p.at) + ": " + p.reason;
      const tb = $("candidates").tBodies[0];
      tb.replaceChildren();
      for (const c of p.candidates || []) {
        const tr = el("tr");
        for (const v of [c.node, c.fits ? "yes" : "no", bytes(c.warm_bytes), bytes(c.missing_bytes), c.fetch_s.toFixed(1) + " s",
          c.env_imported ? "imported" : c.env_cached ? "cached" : "–"]) tr.appendChild(el("td", v));
        tb.appendChild(tr);
      }
      $("candidates").hidden = !(p.candidates && p.candidates.length);
    }
    ended = t.state === "completed" || t.state === "failed" || t.state === "killed" || t.state === "lost";
  }

  function decode(b64) {
    const bin = atob(b64 || "");
    const u8 = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) u8[i] = bin.charCodeAt(i);
    return new TextDecoder().decode(u8);
  }

  // follow reads each stream from where it stopped until nothing more comes.
  async function follow() {
    let got = false;
    for (const s of ["stdout", "stderr"]) {
      for (let i = 0; i < 16; i++) {
        const ch = await call("/api/task/" + encodeURIComponent(id) + "/log?stream=" + s + "&offset=" + offsets[s]);
        const text = decode(ch.data);
        if (text.length === 0 && ch.offset === offsets[s]) break;
        const pre = $("log-" + s);
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.appendChild(document.createTextNode(text));
        if (atEnd) pre.scrollTop = pre.scrollHeight;
        offsets[s] = ch.offset;
        got = true;
      }
    }
    return got;
  }

  async function poll() {
    try {
      if (!drained) {
        render(await call("/api/task/" + encodeURIComponent(id)));
        const wasEnded = ended;
        const got = await follow();
        if (wasEnded && !got) drained = true; // ended and read to the end: stop following
      }
      $("log-follow").textContent = drained ? "(complete)" : "(following)";
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      $("error").hidden = true;
    } catch (e) {
      $("error").textContent = "Cannot update: " + e.message;
      $("error").hidden = false;
    }
    if (!drained) setTimeout(poll, POLL_MS);
  }

  async function kill() {
    $("kill").disabled = true;
    $("kill-msg").textContent = "killing…";
    try {
      await call("/api/task/" + encodeURIComponent(id) + "/kill", { method: "POST", headers: { "X-CSRF-Token": meta("eddy-csrf") } });
      $("kill-msg").textContent = "kill sent";
    } catch (e) {
      $("kill-msg").textContent = "kill refused (" + (e.status || "error") + "): " + e.message;
    }
    $("kill").disabled = false;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("kill").addEventListener("click", kill);
    poll();
  });
})();
