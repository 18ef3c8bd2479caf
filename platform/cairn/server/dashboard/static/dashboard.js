// The dashboard's only script. Two features need it, so it is these ~60 lines by hand rather
// than a library (htmx alone is ~14 KB): (a) a running run's page swaps in a fresh copy of its
// changing part every 2 s until the run ends; (b) a running step's log streams in through
// server-sent events. The action buttons post to the JSON API with the session's cookie.
"use strict";

function refresh(box) {
  const url = box.dataset.live;
  const tick = async () => {
    try {
      const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (r.redirected || r.status === 401) { location.reload(); return; }  // logged out
      if (!r.ok) { setTimeout(tick, 5000); return; }
      const opened = [...box.querySelectorAll("details")].map((d) => d.open);
      box.innerHTML = await r.text();
      box.querySelectorAll("details").forEach((d, i) => { d.open = opened[i] || false; });
      wire(box);
      if (box.querySelector("[data-finished='true']")) return;  // the run ended: stop
    } catch (e) { /* the server restarting: try again */ }
    setTimeout(tick, 2000);
  };
  setTimeout(tick, 2000);
}

function stream(pre) {
  const source = new EventSource(pre.dataset.stream);
  let first = true;
  source.onmessage = (e) => {
    if (first) { pre.textContent = ""; first = false; }  // the stream starts from the top
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent += e.data + "\n";
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  };
  source.addEventListener("end", () => { source.close(); setTimeout(() => location.reload(), 1000); });
  // EventSource reconnects by itself and would replay the log from the start: stop instead.
  source.onerror = () => source.close();
}

function wire(root) {
  for (const button of root.querySelectorAll("button[data-post]")) {
    button.addEventListener("click", async () => {
      const out = button.parentElement.querySelector(".act-result");
      button.disabled = true;
      const r = await fetch(button.dataset.post, { method: "POST", credentials: "same-origin" });
      const body = await r.json().catch(() => ({}));
      if (!r.ok) { out.textContent = body.error || `refused (HTTP ${r.status})`; button.disabled = false; return; }
      if (body.resumed_from) { location.href = `/ui/runs/${encodeURIComponent(body.run_id)}`; return; }
      out.textContent = `asked: ${body.status}`;
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  wire(document);
  for (const box of document.querySelectorAll("[data-live]")) refresh(box);
  for (const pre of document.querySelectorAll("pre[data-stream]")) stream(pre);
});
