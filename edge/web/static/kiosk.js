// The kiosk: one big verdict from the gate's state, in the configured language.
"use strict";

const ICONS = { welcome: "✔", mask: "✖", closer: "⇡", idle: "◎", offline: "⚠" };

// The verdict key for a state from /api/state: pure, so it can be checked apart from the page.
function verdict(state) {
  if (!state || state.camera !== "up") return "offline";
  if (state.door && state.door.relay) return "welcome";
  const faces = state.faces || [];
  if (faces.some((f) => f.decision === "unmasked")) return "mask";
  if (!faces.length && state.too_small > 0) return "closer";  // seen, but too far to decide on
  return "idle";
}

let strings = null;
let shown = null;

async function loadStrings(language) {
  const r = await fetch("/static/strings.json");
  const all = await r.json();
  strings = all[language] || all.en;
  document.documentElement.lang = all[language] ? language : "en";
}

function show(state) {
  const key = verdict(state);
  if (key === shown) return;
  shown = key;
  document.body.className = key;
  document.getElementById("icon").textContent = ICONS[key];
  document.getElementById("verdict").textContent = strings[key];
}

async function poll() {
  try {
    const r = await fetch("/api/state", { cache: "no-store" });
    const state = await r.json();
    if (!strings) {
      await loadStrings(state.kiosk.language);
      if (state.kiosk.mirror) {
        const img = document.getElementById("mirror");
        img.src = "/stream.mjpg";
        img.hidden = false;
      }
    }
    show(state);
  } catch (e) {
    if (strings) show(null);
  }
}

if (typeof module !== "undefined") module.exports = { verdict };
else {
  poll();
  setInterval(poll, 500);
}
