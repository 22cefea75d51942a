"""``maskgate run``: the gate's main loop, built to fail locked.

source → analyzer (detector + classifier) → tracker → gate → outputs, one
frame at a time. The outputs are created first and closed last, so the relay
is off before the models load and off after anything ends the loop: a stop
request (SIGTERM/SIGINT set ``stop``), the end of a file, a lost camera (off
while it reconnects with backoff), or an exception (``finally``). systemd
learns READY=1 once the models are loaded and gets a watchdog ping per loop
turn, so a hung loop is killed and restarted; the unit's ExecStopPost then
drives the relay off once more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .analyzer import Analysis, FrameAnalyzer
from .config import GateConfig
from .decision import Event, Gate
from .draw import annotate
from .notify import Notifier
from .outputs import Outputs
from .snapshots import SnapshotStore
from .sources import Frame, FrameSource, SourceLostError, open_source
from .tracking import Observation, Tracker

logger = logging.getLogger("maskgate.gate")

SNAPSHOT_EVENTS = ("unlock", "deny")


@dataclass
class Stats:
    """Running figures for the periodic summary line."""

    frames: int = 0
    faces: int = 0
    events: dict[str, int] = field(default_factory=dict)
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    since: float = field(default_factory=time.monotonic)

    def add(self, analysis: Analysis) -> None:
        self.frames += 1
        self.faces += len(analysis.faces)
        self.latencies_ms.append(analysis.timings.total)

    def summary(self, now: float) -> str:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        fps = self.frames / max(now - self.since, 1e-9)
        events = ", ".join(f"{k} {v}" for k, v in sorted(self.events.items())) or "none"
        return (
            f"stats: {self.frames} frames, {fps:.1f} fps, per frame p50 {np.percentile(lat, 50):.1f} ms "
            f"p95 {np.percentile(lat, 95):.1f} ms, {self.faces / max(self.frames, 1):.2f} faces/frame; "
            f"events: {events}"
        )


class GateService:
    """The main loop with its collaborators injected, so tests drive it with fakes and mock pins."""

    def __init__(
        self,
        cfg: GateConfig,
        *,
        outputs: Outputs,
        analyzer: FrameAnalyzer,
        open_source: Callable[[threading.Event], FrameSource] | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.outputs = outputs
        self.analyzer = analyzer
        self._open = open_source or (lambda stop: _open_default(cfg, stop))
        self.notifier = notifier or Notifier()
        self.clock = clock
        d = cfg.decision
        self.tracker = Tracker(
            iou_match=d.iou_match, window=d.window, confirm=d.confirm, forget_after_s=d.forget_after_s
        )
        self.gate = Gate(d)
        self.stats = Stats(since=clock())
        self.events: list[Event] = []  # every decision, in order (tests and the exit summary read it)
        s = cfg.service
        self.snapshots = (
            SnapshotStore(s.snapshot_dir, max_bytes=int(s.snapshot_max_mb * 1e6))
            if s.snapshot_dir is not None
            else None
        )

    def run(self, stop: threading.Event) -> int:
        """Process frames until ``stop`` is set or a finite source ends; outputs are off on return."""
        source: FrameSource | None = None
        try:
            self.outputs.off()
            source = self._connect(stop, first=True)
            self.notifier.ready(f"gate running on {self.cfg.source.uri}")
            start_wall = self.clock()
            next_stats = start_wall + self.cfg.service.stats_every_s
            while source is not None and not stop.is_set():
                self.notifier.watchdog()
                try:
                    frame = source.read()
                except SourceLostError as e:
                    self._lost(str(e))
                    source.close()
                    source = self._connect(stop)
                    continue
                if frame is None:
                    break
                if self._pace(source, frame, start_wall, stop):
                    break
                self._step(frame)
                max_frames = self.cfg.source.max_frames
                if max_frames is not None and self.stats.frames >= max_frames:
                    break
                now = self.clock()
                if now >= next_stats:
                    logger.info("%s", self.stats.summary(now))
                    next_stats = now + self.cfg.service.stats_every_s
        finally:
            self.notifier.stopping()
            try:
                self.outputs.off()
            finally:
                if source is not None:
                    source.close()
        logger.info("%s", self.stats.summary(self.clock()))
        logger.info("stopped; outputs off")
        return 0

    def _step(self, frame: Frame) -> None:
        analysis = self.analyzer.analyze(frame.image)
        self.stats.add(analysis)
        observations = [Observation(f.box, f.masked, f.p_masked) for f in analysis.faces]
        tracks = self.tracker.update(frame.timestamp, observations)
        levels, events = self.gate.step(frame.timestamp, tracks)
        self.outputs.apply(levels)
        for event in events:
            self._report(event, frame, analysis)

    def _report(self, event: Event, frame: Frame | None = None, analysis: Analysis | None = None) -> None:
        self.events.append(event)
        self.stats.events[event.kind] = self.stats.events.get(event.kind, 0) + 1
        where = f"frame {frame.index}" + (f" ({frame.name})" if frame and frame.name else "") if frame else ""
        logger.info("%s%s", event, f" [{where}]" if where else "")
        if self.snapshots is not None and frame is not None and event.kind in SNAPSHOT_EVENTS:
            self.snapshots.save(annotate(frame.image, analysis.faces if analysis else []), event.kind)

    def _lost(self, reason: str) -> None:
        """Camera gone: door locked now, faces forgotten, one log line (not one per retry)."""
        levels, events = self.gate.lose_source(self.clock())
        self.outputs.apply(levels)
        self.outputs.off()
        self.tracker.clear()
        for event in events:
            self._report(event)
        logger.warning("source lost: %s; relay off, reconnecting", reason)
        self.notifier.status(f"source lost: {reason}")

    def _connect(self, stop: threading.Event, *, first: bool = False) -> FrameSource | None:
        """Open the source, retrying a camera that is not there yet with exponential backoff."""
        delay = self.cfg.source.reconnect_initial_s
        failures = 0
        while not stop.is_set():
            try:
                source = self._open(stop)
            except SourceLostError as e:
                if failures == 0:
                    logger.warning("%s; retrying every %g-%g s", e, delay, self.cfg.source.reconnect_max_s)
                failures += 1
                self.notifier.watchdog()
                stop.wait(delay)
                delay = min(delay * 2, self.cfg.source.reconnect_max_s)
                continue
            if not first or failures:
                logger.info("source back after %d attempt(s)", failures + 1)
                self.notifier.status(f"gate running on {self.cfg.source.uri}")
            return source
        return None

    def _pace(self, source: FrameSource, frame: Frame, start: float, stop: threading.Event) -> bool:
        """Files play at their frame rate when ``source.pace`` is set; True if stopped while waiting."""
        if source.live or not self.cfg.source.pace:
            return False
        wait = start + frame.timestamp - self.clock()
        return wait > 0 and stop.wait(wait)


def _open_default(cfg: GateConfig, stop: threading.Event) -> FrameSource:
    return open_source(cfg.source, cancel=stop)


def run_gate(cfg: GateConfig, stop: threading.Event, *, factory=None) -> int:
    """Build the outputs (first: relay off), the models, and run until stopped."""
    with Outputs.from_config(cfg.outputs, pulse_s=cfg.decision.pulse_s, factory=factory) as outputs:
        names = ", ".join(f"{d.name} on {d.pin}" for d in outputs.devices()) or "none"
        logger.info("outputs: %s (all off)", names)
        analyzer = FrameAnalyzer.from_config(cfg.detector, cfg.classifier)
        try:
            logger.info(
                "models: detector %s, classifier %s (%s, threshold %.2f)",
                analyzer.detector.name,
                analyzer.bundle.path.name,
                "/".join(analyzer.classes),
                analyzer.threshold,
            )
            return GateService(cfg, outputs=outputs, analyzer=analyzer).run(stop)
        finally:
            analyzer.close()
