// The live view: state from /api/state once a second, decisions from /api/events as they happen.
"use strict";

const $ = (id) => document.getElementById(id);

function fill(dl, values) {
  dl.replaceChildren();
  for (const [key, value] of Object.entries(values)) {
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = key;
    dd.textContent = value;
    dl.append(dt, dd);
  }
}

function render(state) {
  const open = state.door && state.door.relay;
  $("door").textContent = open ? "door open" : "door locked";
  $("door").className = "badge " + (open ? "open" : "locked");
  $("camera").textContent = "camera " + state.camera;
  $("camera").className = "badge " + state.camera;
  $("fps").textContent = state.fps.toFixed(1);
  $("faces").textContent = state.faces.map((f) => f.decision).join(", ") || "none";
  $("uptime").textContent = Math.round(state.uptime_s) + " s";
  fill($("latency"), state.latency_ms);
  fill($("versions"), state.versions);
}

async function poll() {
  try {
    const r = await fetch("/api/state", { cache: "no-store" });
    if (r.ok) render(await r.json());
  } catch (e) {
    $("camera").textContent = "server unreachable";
  }
}

function listen() {
  const source = new EventSource("/api/events");  // resumes with Last-Event-ID on its own
  source.addEventListener("decision", (msg) => {
    const ev = JSON.parse(msg.data);
    const li = document.createElement("li");
    li.className = "ev-" + ev.kind;
    const when = new Date(ev.time * 1000).toLocaleTimeString();
    li.textContent = `${when} ${ev.kind}${ev.detail ? ": " + ev.detail : ""}`;
    const list = $("events");
    list.prepend(li);
    while (list.children.length > 20) list.lastChild.remove();
  });
}

poll();
setInterval(poll, 1000);
listen();
