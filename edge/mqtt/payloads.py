"""What the gate publishes over MQTT, one pydantic model per topic's JSON.

The models are the contract with whoever subscribes (Home Assistant templates, Node-RED flows, a
building management system): docs/integration.md documents them field by field, and the tests
parse every message a real broker delivers back through them (unknown keys are errors), so a
renamed field fails a test instead of a dashboard. Keys mean what they mean in the web server's
JSON: ``time`` is wall-clock seconds since the epoch, ``kind`` an event's kind, ``faces`` the
face (track) ids of an event. The builders read the gate's ``LiveState`` copies; no image or
crop ever enters a payload.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..gate.live import CAMERA_EVENTS, CAMERA_STATES, DECISIONS, STAGES, Histogram, LiveEvent

EVENT_KINDS = DECISIONS + CAMERA_EVENTS
EventKind = Literal[EVENT_KINDS]


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FacesInView(Payload):
    """The faces of the latest frame near enough to decide on, by this frame's classification."""

    in_view: int = Field(ge=0, description="faces near enough to decide on")
    masked: int = Field(ge=0, description="of them classified masked (p(masked) at or above the threshold)")
    unmasked: int = Field(ge=0, description="of them classified unmasked")
    too_small: int = Field(ge=0, description="faces seen but too far away (lower than decision.min_face_px)")


class StatePayload(Payload):
    """``<prefix>/state``, retained: the door, the faces in view, the camera; sent when it changes."""

    gate: str
    time: float = Field(description="wall-clock time of this state, seconds since the epoch")
    door: Literal["locked", "unlocked"] = Field(description="unlocked while the relay is on")
    phase: Literal["locked", "unlocked", "cooldown"] = Field(description="the decision's phase")
    alarm: bool = Field(description="the red LED: an unmasked face is, or just was, in view")
    camera: Literal["up", "down"] = Field(description="frames are arriving (the door stays locked if down)")
    camera_status: Literal[CAMERA_STATES] = Field(description="starting, up, lost, reconnecting or ended")
    faces: FacesInView
    unlocks: int = Field(ge=0, description="relay pulses since the gate started")
    denials: int = Field(ge=0, description="unmasked faces denied since the gate started")


class FaceScore(Payload):
    face: int = Field(ge=0, description="the face's id, the same while the tracker follows it")
    p_masked: float = Field(ge=0.0, le=1.0, description="p(masked) of the face's latest frame")
    height_px: int = Field(ge=0, description="the face box's height in the frame (px): its size")


class EventPayload(Payload):
    """``<prefix>/events``: one per decision and per camera outage and return, never retained."""

    gate: str
    id: int = Field(ge=1, description="grows by one per event of this gate run (starts at 1 on a restart)")
    time: float = Field(description="wall-clock time of the decision, seconds since the epoch")
    kind: EventKind
    event_type: EventKind = Field(description="the same as kind, the key Home Assistant's event entity reads")
    faces: list[int] = Field(description="ids of the faces involved")
    scores: list[FaceScore] = Field(description="the faces that decided it (unlock, deny, cancel)")
    detail: str = Field(description="the same in words, as the log line says it")

    @model_validator(mode="after")
    def _same_kind(self) -> EventPayload:
        if self.event_type != self.kind:
            raise ValueError("event_type must equal kind")
        return self


class StageLatency(Payload):
    mean: float = Field(ge=0, description="mean milliseconds per frame over the interval")
    p95: float | None = Field(
        description="upper bound (ms) of the histogram bucket holding the 95th percentile; none above 1 s"
    )


class MqttCounts(Payload):
    published: int = Field(ge=0, description="messages handed to the client library since start")
    events: int = Field(ge=0, description="of them events")
    dropped: int = Field(
        ge=0, description="events dropped since start: the queue was full while the broker was away"
    )
    queued: int = Field(ge=0, description="events waiting for the broker now")
    connects: int = Field(ge=0, description="successful connections to the broker since start")


class StatsPayload(Payload):
    """``<prefix>/stats``, every ``mqtt.stats_every_s``: the interval's rates, the run's counts."""

    gate: str
    time: float
    interval_s: float = Field(ge=0, description="seconds since the previous stats message (or the start)")
    uptime_s: float = Field(ge=0)
    frames: int = Field(ge=0, description="frames analysed in the interval")
    fps: float = Field(ge=0, description="frames per second over the interval")
    latency_ms: dict[str, StageLatency] = Field(description="per stage: detect, preprocess, classify, total")
    decisions: dict[str, int] = Field(description="decisions by kind since start")
    relay_pulses: int = Field(ge=0)
    camera_reconnects: int = Field(ge=0)
    mqtt: MqttCounts


def state_payload(gate: str, snapshot: Mapping[str, Any], wall: float) -> StatePayload:
    """The retained state from a ``LiveState.snapshot()``."""
    door = snapshot["door"]
    faces = snapshot["faces"]
    decisions = snapshot["decisions"]
    return StatePayload(
        gate=gate,
        time=round(wall, 3),
        door="unlocked" if door.get("relay") else "locked",
        phase=door.get("phase", "locked"),
        alarm=bool(door.get("red")),
        camera="up" if snapshot["camera"] == "up" else "down",
        camera_status=snapshot["camera"],
        faces=FacesInView(
            in_view=len(faces),
            masked=sum(f["decision"] == "masked" for f in faces),
            unmasked=sum(f["decision"] == "unmasked" for f in faces),
            too_small=int(snapshot.get("too_small", 0)),
        ),
        unlocks=int(door.get("unlocks", 0)),
        denials=int(decisions.get("deny", 0)),
    )


def event_payload(gate: str, event: LiveEvent) -> EventPayload:
    return EventPayload(
        gate=gate,
        id=event.id,
        time=round(event.wall, 6),
        kind=event.kind,
        event_type=event.kind,
        faces=list(event.faces),
        scores=[FaceScore(face=s.face, p_masked=s.p_masked, height_px=s.height_px) for s in event.scores],
        detail=event.detail,
    )


def stats_payload(
    gate: str,
    now: Mapping[str, Any],
    before: Mapping[str, Any],
    *,
    interval_s: float,
    uptime_s: float,
    wall: float,
    mqtt: MqttCounts,
) -> StatsPayload:
    """The interval between two ``LiveState.metrics()`` copies, with the run's totals."""
    frames = now["counters"]["frames"] - before["counters"]["frames"]
    return StatsPayload(
        gate=gate,
        time=round(wall, 3),
        interval_s=round(interval_s, 3),
        uptime_s=round(uptime_s, 1),
        frames=frames,
        fps=round(frames / interval_s, 2) if interval_s > 0 else 0.0,
        latency_ms={s: _latency(now["histograms"][s], before["histograms"][s]) for s in STAGES},
        decisions=dict(sorted(now["decisions"].items())),
        relay_pulses=now["counters"]["relay_pulses"],
        camera_reconnects=now["counters"]["reconnects"],
        mqtt=mqtt,
    )


def _latency(now: Histogram, before: Histogram) -> StageLatency:
    count = now.count - before.count
    if count <= 0:
        return StageLatency(mean=0.0, p95=None)
    counts = [a - b for a, b in zip(now.counts, before.counts, strict=True)]
    bounds = [*now.bounds, math.inf]
    seen, p95 = 0, math.inf
    for bound, n in zip(bounds, counts, strict=True):
        seen += n
        if seen >= 0.95 * count:
            p95 = bound
            break
    return StageLatency(mean=round((now.sum - before.sum) / count, 3), p95=None if math.isinf(p95) else p95)
