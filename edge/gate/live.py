"""What the gate shows to observers (the web server), handed over without ever waiting on them.

``LiveState`` is the one bounded structure between the gate loop and any side channel. The gate
thread calls ``frame``, ``event`` and ``camera``: each takes a lock for a handful of assignments
and counter increments (no JPEG encoding, no drawing, no copy of the image: the frame is handed
over by reference, and the gate never writes into a frame after analysing it). Readers take
copies of the small data (``snapshot``, ``events_after``) and the latest frame reference
(``latest``); they draw and encode in their own thread, at their own pace. A slow reader only
ever sees the newest frame; the gate loses nothing and never blocks on a reader.

Events live in a ring of bounded size with increasing ids, so a reader that reconnects asks
for the events after the last id it saw (Server-Sent Events' Last-Event-ID) and gets those the
ring still holds. Counters and per-stage latency histograms (fixed buckets, one increment per
frame) are kept here, plain numbers, for an exporter to read at scrape time.

An observer that wants to act on a decision at once (the MQTT publisher) registers a listener: a
callable run on the gate's thread after each event, outside the lock, that must only signal
(``threading.Event.set``), never do the work. The camera's coming and going enters the ring too
(``camera_lost``, ``camera_back``), once per outage, but is not counted as a decision.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .decision import FaceScore

# Upper bounds of the latency buckets (ms) of each stage's histogram; one more bucket is +Inf.
LATENCY_BUCKETS_MS = (1.0, 2.5, 5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0, 1000.0)
STAGES = ("detect", "preprocess", "classify", "total")
CAMERA_STATES = ("starting", "up", "lost", "reconnecting", "ended")
DECISIONS = ("unlock", "relock", "cancel", "deny", "clear")
CAMERA_EVENTS = ("camera_lost", "camera_back")


@dataclass(frozen=True)
class LiveEvent:
    """A decision as observers see it: an id that only grows, the wall-clock time, what happened."""

    id: int
    wall: float
    kind: str
    faces: tuple[int, ...]
    detail: str
    scores: tuple[FaceScore, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "time": self.wall, "kind": self.kind, "faces": list(self.faces),
                "detail": self.detail, "scores": [asdict(s) for s in self.scores]}  # fmt: skip


class Histogram:
    """Fixed-bucket counts (not cumulative), their sum and count: O(log buckets) per observation."""

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS_MS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def copy(self) -> Histogram:
        h = Histogram(self.bounds)
        h.counts, h.sum, h.count = list(self.counts), self.sum, self.count
        return h


class LiveState:
    """The gate's latest frame, faces, door and camera state, fps, latencies, events and counters."""

    def __init__(
        self,
        *,
        max_events: int = 256,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self._lock = threading.Lock()
        self._clock, self._wall = clock, wall
        self.started = clock()
        self._seq = 0  # frames published; the latest frame's number
        self._image = None
        self._faces: tuple = ()
        self._too_small = 0
        self._frame_at: float | None = None  # monotonic time of the latest frame
        self._fps = 0.0
        self._latency: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._door: dict[str, Any] = {"relay": False, "green": False, "red": False, "buzzer": False,
                                      "unlocks": 0}  # fmt: skip
        self._camera = "starting"
        self._events: deque[LiveEvent] = deque(maxlen=max_events)
        self._next_event = 1
        self.versions: dict[str, str] = {}
        self.min_face_px: int | None = None  # faces lower than this are too far to decide on
        self.counters: dict[str, int] = {"frames": 0, "faces": 0, "relay_pulses": 0, "reconnects": 0}
        self.decisions: dict[str, int] = {}
        self.histograms = {stage: Histogram() for stage in STAGES}
        self._listeners: list[Callable[[], None]] = []

    def add_listener(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (on the gate's thread: it must return at once) after every event."""
        self._listeners.append(wake)

    def _notify(self) -> None:
        for wake in self._listeners:
            wake()

    # --- the gate's side: a lock and a few assignments each -----------------------------------

    def set_versions(self, **versions: str) -> None:
        with self._lock:
            self.versions = {k: str(v) for k, v in versions.items()}

    def frame(
        self, image, faces: Sequence, timings, levels=None, phase: str | None = None, too_small: int = 0
    ) -> None:
        """The frame just analysed, by reference, with its faces, stage timings and output levels;
        ``too_small`` counts the faces too far away to decide on."""
        now = self._clock()
        with self._lock:
            if self._frame_at is not None:
                dt = now - self._frame_at
                if dt > 0:  # an exponential average: steady, and O(1)
                    self._fps = 1.0 / dt if self._fps == 0 else 0.9 * self._fps + 0.1 / dt
            self._seq += 1
            self._image, self._faces, self._frame_at = image, tuple(faces), now
            self._too_small = int(too_small)
            if self._camera in ("lost", "reconnecting"):
                self.counters["reconnects"] += 1
            self._camera = "up"
            self.counters["frames"] += 1
            self.counters["faces"] += len(self._faces)
            if timings is not None:
                for stage in STAGES:
                    ms = float(getattr(timings, stage, 0.0))
                    self._latency[stage] = ms
                    self.histograms[stage].observe(ms)
            if levels is not None:
                if levels.unlocks > self._door["unlocks"]:
                    self.counters["relay_pulses"] += levels.unlocks - self._door["unlocks"]
                self._door = {
                    "relay": bool(levels.relay),
                    "green": bool(levels.green),
                    "red": bool(levels.red),
                    "buzzer": bool(levels.buzzer),
                    "unlocks": int(levels.unlocks),
                }
            if phase is not None:
                self._door["phase"] = str(phase)

    def event(
        self, kind: str, faces: Sequence[int] = (), detail: str = "", scores: Sequence[FaceScore] = ()
    ) -> int:
        """A decision (or the camera's ``camera_lost`` / ``camera_back``) into the ring; returns its id."""
        with self._lock:
            ev = LiveEvent(self._next_event, self._wall(), kind, tuple(faces), detail, tuple(scores))
            self._next_event += 1
            self._events.append(ev)
            if kind not in CAMERA_EVENTS:
                self.decisions[kind] = self.decisions.get(kind, 0) + 1
        self._notify()
        return ev.id

    def camera(self, status: str) -> None:
        """The source is 'up', 'lost', 'reconnecting' or 'ended'; the door is locked unless 'up'."""
        if status not in CAMERA_STATES:
            raise ValueError(f"camera status {status!r}: expected one of {', '.join(CAMERA_STATES)}")
        with self._lock:
            if status == "up" and self._camera in ("lost", "reconnecting"):
                self.counters["reconnects"] += 1
            self._camera = status
            if status != "up":
                self._door = {**self._door, "relay": False, "green": False}
        self._notify()

    # --- the readers' side: copies of small data, the frame by reference ----------------------

    def latest(self) -> tuple[int, Any, tuple]:
        """The latest frame's number, its image (never to be written into) and its faces."""
        with self._lock:
            return self._seq, self._image, self._faces

    def frame_age(self) -> float | None:
        """Seconds since the latest frame; None before the first."""
        with self._lock:
            return None if self._frame_at is None else self._clock() - self._frame_at

    def events_after(self, last_id: int = 0) -> list[LiveEvent]:
        """The events with an id above ``last_id`` that the ring still holds, oldest first."""
        with self._lock:
            return [e for e in self._events if e.id > last_id]

    @property
    def last_event_id(self) -> int:
        with self._lock:
            return self._next_event - 1

    def snapshot(self) -> dict[str, Any]:
        """The state as JSON-ready data: door, faces with decisions, fps, latencies, camera, uptime."""
        with self._lock:
            age = None if self._frame_at is None else self._clock() - self._frame_at
            faces = [_face_json(f) for f in self._faces]
            return {
                "door": dict(self._door),
                "faces": faces,
                "too_small": self._too_small,
                "fps": round(self._fps, 2),
                "latency_ms": {k: round(v, 2) for k, v in self._latency.items()},
                "camera": self._camera,
                "frame": self._seq,
                "frame_age_s": None if age is None else round(age, 3),
                "uptime_s": round(self._clock() - self.started, 1),
                "versions": dict(self.versions),
                "min_face_px": self.min_face_px,
                "counters": dict(self.counters),
                "decisions": dict(self.decisions),
                "last_event_id": self._next_event - 1,
            }

    def metrics(self) -> dict[str, Any]:
        """Counters, decisions, histograms and the camera's state, copied under the lock."""
        with self._lock:
            return {
                "counters": dict(self.counters),
                "decisions": dict(self.decisions),
                "histograms": {k: h.copy() for k, h in self.histograms.items()},
                "camera": self._camera,
            }


def _face_json(face) -> dict[str, Any]:
    """A face as the page shows it: its box and class, and what the gate makes of it."""
    data = face.as_json() if hasattr(face, "as_json") else {"box": list(face.box)}
    masked = getattr(face, "masked", None)
    data["decision"] = "masked" if masked else "unmasked" if masked is not None else "unknown"
    data["height"] = int(face.box[3] - face.box[1])
    return data
