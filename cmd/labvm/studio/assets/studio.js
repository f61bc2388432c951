// labvm studio: the page's few behaviours, in plain JavaScript (no
// library): changes are sent with the page's token, their answer shown
// in #notice; labvmd's events arrive by Server-Sent Events and replace
// the rows (and this instance's details) they concern.
"use strict";
(function () {
  const token = document.querySelector('meta[name="studio-token"]').content;
  const notice = document.getElementById("notice");
  const detailName = document.body.dataset.detail || "";

  function show(html, ok) {
    notice.innerHTML = html;
    notice.className = ok ? "shown ok" : "shown failed";
  }

  // Every form marked data-change is posted by fetch, with the token.
  document.addEventListener("submit", async function (ev) {
    const form = ev.target;
    if (!form.hasAttribute("data-change")) return;
    ev.preventDefault();
    const body = new URLSearchParams(new FormData(form));
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    try {
      const resp = await fetch(form.action, {
        method: "POST",
        headers: { "X-Studio-Token": token },
        body: body,
        credentials: "same-origin",
      });
      show(await resp.text(), resp.ok);
      if (resp.ok && form.id === "create-form") form.reset();
      if (resp.ok) {
        const d = form.closest("details");
        if (d) d.open = false;
      }
    } catch (e) {
      show('<div class="error"><strong class="msg">labvm studio is not answering: ' +
        String(e).replace(/[<&]/g, "") + '</strong><div class="hint">Hint: is `labvm studio` still running?</div></div>', false);
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  });

  // "mine only" hides the other users' rows and keeps the choice in the URL.
  const mine = document.getElementById("mine");
  const table = document.getElementById("instances");
  if (mine && table) {
    mine.addEventListener("change", function () {
      table.classList.toggle("mine-only", mine.checked);
      const u = new URL(location.href);
      if (mine.checked) u.searchParams.set("mine", "1"); else u.searchParams.delete("mine");
      history.replaceState(null, "", u);
    });
  }

  async function replace(id, url) {
    const el = document.getElementById(id);
    if (!el) return;
    const resp = await fetch(url, { credentials: "same-origin" });
    if (resp.ok) el.innerHTML = await resp.text();
  }

  function resync() {
    replace("rows", "/fragments/list");
    replace("quota", "/fragments/quota");
    if (detailName) replace("detail", "/fragments/instances/" + encodeURIComponent(detailName));
  }

  function putRow(msg) {
    const rows = document.getElementById("rows");
    if (!rows) return;
    const old = document.getElementById("inst-" + msg.name);
    if (msg.gone) {
      if (old) old.remove();
      return;
    }
    const tmp = document.createElement("tbody");
    tmp.innerHTML = msg.html;
    const row = tmp.firstElementChild;
    if (old) {
      // Keep an open "Delete…" open while its row changes.
      const open = old.querySelector("details[open]");
      if (open) row.querySelector("details").open = true;
      old.replaceWith(row);
      return;
    }
    const empty = rows.querySelector("tr.empty");
    if (empty) empty.remove();
    const after = Array.from(rows.children).find((r) => r.dataset.name > msg.name);
    rows.insertBefore(row, after || null);
  }

  const live = document.getElementById("live");
  let opened = false;
  const es = new EventSource("/events");
  es.addEventListener("open", function () {
    live.textContent = "live";
    live.className = "live on";
    // After a reconnect, changes made meanwhile were not seen.
    if (opened) resync();
    opened = true;
  });
  es.addEventListener("error", function () {
    live.textContent = "reconnecting…";
    live.className = "live off";
  });
  es.addEventListener("instance", function (ev) {
    const msg = JSON.parse(ev.data);
    putRow(msg);
    if (detailName === msg.name) {
      replace("detail", "/fragments/instances/" + encodeURIComponent(detailName));
    }
  });
  es.addEventListener("quota", function (ev) {
    const q = document.getElementById("quota");
    if (q) q.innerHTML = JSON.parse(ev.data).html;
  });
  es.addEventListener("resync", resync);
})();
