// The console's live parts that htmx attributes do not cover (no build step: plain JS).
"use strict";

// The task list polls every few seconds; a refresh replaces its rows, which would drop the
// operator's ticked boxes and the keyboard focus. So it waits while either is in use.
function consoleMayRefresh() {
  const rows = document.getElementById("task-rows");
  if (!rows) return true;
  if (document.querySelector("input[name=taskId]:checked")) return false;
  return !rows.contains(document.activeElement);
}

// The task page follows its task over Server-Sent Events (the REST API's log follow, under
// /ui/ where the console's cookie is sent): log lines are appended as they arrive; a
// transition or the end re-renders the timeline and status from the server.
function consoleFollow(el) {
  const logs = document.getElementById("logs");
  const liveUrl = el.dataset.live;
  let from = Number(el.dataset.fromLog || 0);
  const refresh = () => htmx.ajax("GET", liveUrl, { target: "#task-live", swap: "outerHTML" });
  // From what the page already shows: only newer lines and transitions come.
  const query = "?fromLog=" + from + "&fromTransition=" + Number(el.dataset.fromTransition || 0);
  const source = new EventSource(el.dataset.events + query);
  source.addEventListener("log", (e) => {
    const seq = Number(e.lastEventId);
    if (Number.isFinite(seq) && seq < from) return; // seen already (a resumed stream)
    from = seq + 1;
    logs.textContent += e.data + "\n";
  });
  source.addEventListener("transition", refresh);
  source.addEventListener("end", () => {
    source.close();
    refresh();
    el.dataset.state = "ended";
  });
  // An `error` event with data is the server's (the task vanished): stop. Without data it is
  // the connection: EventSource reconnects by itself, sending Last-Event-ID.
  source.addEventListener("error", (e) => {
    if (e.data) source.close();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-events]").forEach(consoleFollow);
});
