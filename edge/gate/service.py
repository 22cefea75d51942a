"""``maskgate run``: the gate's main loop, built to fail locked.

source → analyzer (detector + classifier) → tracker → gate → outputs, one
frame at a time. The outputs are created first and closed last, so the relay
is off before the models load and off after anything ends the loop: a stop
request (SIGTERM/SIGINT set ``stop``), the end of a file, a lost camera (off
while it reconnects with backoff), or an exception (``finally``). systemd
learns READY=1 once the models are loaded and gets watchdog pings from the
loop (at half the unit's WatchdogSec), so a hung loop is killed and
restarted; the unit's ExecStopPost then drives the relay off once more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..core.errors import ConfigError
from ..core.timing import summarize
from .analyzer import Analysis, FrameAnalyzer
from .config import GateConfig
from .decision import Event, Gate
from .draw import annotate
from .live import LiveState
from .notify import Notifier
from .outputs import Outputs
from .snapshots import SnapshotStore
from .sources import Frame, FrameSource, SourceLostError, open_source
from .tracking import Observation, Tracker

logger = logging.getLogger("maskgate.gate")

SNAPSHOT_EVENTS = ("unlock", "deny")
WAIT_SLICE_S = 0.5  # long waits are cut into slices that ping the watchdog


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
        lat = summarize(self.latencies_ms) or {"p50": 0.0, "p95": 0.0}
        fps = self.frames / max(now - self.since, 1e-9)
        events = ", ".join(f"{k} {v}" for k, v in sorted(self.events.items())) or "none"
        return (
            f"stats: {self.frames} frames, {fps:.1f} fps, per frame p50 {lat['p50']:.1f} ms "
            f"p95 {lat['p95']:.1f} ms, {self.faces / max(self.frames, 1):.2f} faces/frame; events: {events}"
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
        live: LiveState | None = None,
    ) -> None:
        self.cfg = cfg
        self.outputs = outputs
        self.analyzer = analyzer
        self._open = open_source or (lambda stop: _open_default(cfg, stop))
        self.notifier = notifier or Notifier()
        self.clock = clock
        self.live = live  # observers' view (the web server): updated in O(1) per frame, never awaited
        if live is not None:
            live.min_face_px = cfg.decision.min_face_px
        d = cfg.decision
        self.tracker = Tracker.from_config(d)
        self.gate = Gate(d)
        self.stats = Stats(since=clock())
        self.events: deque[Event] = deque(maxlen=100)  # the latest decisions, for tests and debugging
        s = cfg.service
        self.snapshots = (
            SnapshotStore(s.snapshot_dir, max_bytes=int(s.snapshot_max_mb * 1e6))
            if s.snapshot_dir is not None
            else None
        )

    def run(self, stop: threading.Event) -> int:
        """Process frames until ``stop`` is set or a finite source ends; outputs are off on return."""
        source: FrameSource | None = None
        self._outage = _Outage(self.cfg.source.reconnect_initial_s)
        self._opened = self._live = False  # the source has opened once; it is a camera or stream
        try:
            self.outputs.off()
            # Ready once the models are loaded (the caller did that): a camera that is late
            # must not make systemd time the start out and restart-loop the service.
            self.notifier.ready(f"gate running on {self.cfg.source.uri}")
            start_wall = self.clock()
            next_stats = start_wall + self.cfg.service.stats_every_s
            while not stop.is_set():
                self.notifier.watchdog()
                if source is None:
                    source = self._open_or_wait(stop)
                    start_wall = self.clock()  # a reopened file starts at 0 again: pace it from now
                    continue
                try:
                    frame = source.read()
                except SourceLostError as e:
                    again = self._live or self.cfg.source.loop
                    self._lost(str(e), reconnecting=again)
                    source.close()
                    source = None
                    if not again:
                        # a file that will not play on: end non-zero, so that systemd restarts the gate
                        raise
                    self._backoff(stop)
                    continue
                if frame is None:
                    break
                if self._outage.active:
                    self._back()
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
            if self.live is not None:
                self.live.camera("ended")
            try:
                self.outputs.off()
            finally:
                self.notifier.stopping()
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
        changed = self.outputs.apply(levels)  # the door first; logs and snapshots after
        if self.live is not None:
            live_args = (frame.image, analysis.faces, analysis.timings, levels, self.gate.phase)
            self.live.frame(*live_args, too_small=getattr(analysis, "too_small", 0))
        for event in events:
            self._report(event, frame, analysis)
        if changed:
            logger.info("outputs: %s", ", ".join(changed))

    def _report(self, event: Event, frame: Frame | None = None, analysis: Analysis | None = None) -> None:
        self.events.append(event)
        if self.live is not None:
            self.live.event(event.kind, event.faces, event.detail, event.scores)
        self.stats.events[event.kind] = self.stats.events.get(event.kind, 0) + 1
        where = f"frame {frame.index}" + (f" ({frame.name})" if frame and frame.name else "") if frame else ""
        logger.info("%s%s", event, f" [{where}]" if where else "")
        if self.snapshots is not None and frame is not None and event.kind in SNAPSHOT_EVENTS:
            self.snapshots.save(annotate(frame.image, analysis.faces if analysis else []), event.kind)

    def _lost(self, reason: str, *, reconnecting: bool = True) -> None:
        """Camera gone: door locked now, one log line per outage (not per retry). The faces are not
        cleared: the tracker forgets them by time (``forget_after_s``), so a person still in view
        after a short outage keeps their face id and is not let in twice."""
        _, events = self.gate.lose_source(self.clock())
        self.outputs.off()
        for event in events:
            self._report(event)
        first = not self._outage.active
        if first:
            logger.warning("source lost: %s; relay off%s", reason, ", reconnecting" if reconnecting else "")
            self.notifier.status(f"source lost: {reason}")
        self._outage.begin(self.clock())
        self._outage.lost = True
        if self.live is not None:
            self.live.camera("lost" if not reconnecting else "reconnecting")
            if first:  # once per outage, as the log line; after the state, so observers see both agree
                self.live.event("camera_lost", detail=reason)

    def _open_or_wait(self, stop: threading.Event) -> FrameSource | None:
        """Open the source; a camera that is not there (yet) is retried after a growing wait.

        A file that opened once and will not open again is lost like a camera, not a user error.
        """
        if self._outage.active:
            self._outage.attempts += 1
        try:
            source = self._open(stop)
        except (SourceLostError, ConfigError) as e:
            if isinstance(e, ConfigError) and not self._opened:
                raise  # never opened: a wrong path or a file that is no video, the user's to fix
            if not self._outage.active:
                logger.warning(
                    "%s; retrying every %g-%g s", e, self._outage.delay, self.cfg.source.reconnect_max_s
                )
                if getattr(e, "detail", ""):  # the library's own words, once, not on every retry
                    logger.warning("  %s", e.detail)
                self.notifier.status(f"waiting for the source: {e}")
                self._outage.begin(self.clock())
                self._outage.attempts = 1  # the attempt that just failed
            if self.live is not None:
                self.live.camera("reconnecting")
            self._backoff(stop)
            return None
        self._opened, self._live = True, source.live
        return source

    def _backoff(self, stop: threading.Event) -> None:
        self._wait(stop, self._outage.delay)
        self._outage.delay = min(self._outage.delay * 2, self.cfg.source.reconnect_max_s)

    def _back(self) -> None:
        """The first frame after an outage: only now is the source really back."""
        back = f"after {self._outage.attempts} attempt(s), {self.clock() - self._outage.since:.1f} s"
        logger.info("source back %s", back)
        if self.live is not None:
            self.live.camera("up")
            if self._outage.lost:
                self.live.event("camera_back", detail=back)
        self.notifier.status(f"gate running on {self.cfg.source.uri}")
        self._outage = _Outage(self.cfg.source.reconnect_initial_s)

    def _wait(self, stop: threading.Event, seconds: float) -> bool:
        """Wait, pinging the watchdog, so long waits never look like a hang; True if stopped."""
        deadline = self.clock() + seconds
        while (left := deadline - self.clock()) > 0:
            if stop.wait(min(left, WAIT_SLICE_S)):
                return True
            self.notifier.watchdog()
        return stop.is_set()

    def _pace(self, source: FrameSource, frame: Frame, start: float, stop: threading.Event) -> bool:
        """Files play at their frame rate when ``source.pace`` is set; True if stopped while waiting."""
        if source.live or not self.cfg.source.pace:
            return False
        return self._wait(stop, start + frame.timestamp - self.clock())


@dataclass
class _Outage:
    """Backoff state while the source is away."""

    delay: float
    active: bool = False
    since: float = 0.0
    attempts: int = 0
    lost: bool = False  # a source that was up went away (not one that has not come up yet)

    def begin(self, now: float) -> None:
        if not self.active:
            self.active, self.since, self.attempts = True, now, 0


def _open_default(cfg: GateConfig, stop: threading.Event) -> FrameSource:
    return open_source(cfg.source, cancel=stop)


def run_gate(cfg: GateConfig, stop: threading.Event, *, factory=None, live: LiveState | None = None) -> int:
    """Build the outputs (first: relay off), the models, and run until stopped; ``live``, if given,
    is kept up to date for observers."""
    with Outputs.from_config(
        cfg.outputs, pulse_s=cfg.decision.pulse_s, factory=factory, guarded=True
    ) as outputs:
        names = ", ".join(f"{d.name} on {d.pin}" for d in outputs.devices()) or "none"
        logger.info("outputs: %s (all off)", names)
        analyzer = FrameAnalyzer.from_config(cfg.detector, cfg.classifier, cfg.decision)
        try:
            logger.info(
                "models: detector %s, classifier %s (%s, threshold %.2f)",
                analyzer.detector.name,
                analyzer.bundle.path.name,
                "/".join(analyzer.classes),
                analyzer.threshold,
            )
            if live is not None:
                live.set_versions(
                    detector=analyzer.detector.name,
                    classifier=analyzer.bundle.path.name,
                    classes="/".join(analyzer.classes),
                    threshold=f"{analyzer.threshold:.4f}",
                )
            return GateService(cfg, outputs=outputs, analyzer=analyzer, live=live).run(stop)
        finally:
            analyzer.close()
