"""The gate's decision: a pure state machine from confirmed faces to output levels.

    LOCKED --(masked face confirmed, no unmasked face)--> UNLOCKED (relay on, pulse_s)
    UNLOCKED --(pulse over, or unmasked face confirmed)--> COOLDOWN (cooldown_s) --> LOCKED

An unmasked face turns the red LED on for as long as it is there plus
``alarm_s``, and sounds the buzzer for ``buzzer_s``. The machine is fed
timestamps, never reads a clock, so it is tested exactly without sleeping;
the relay level it returns is on only inside a pulse, and the output layer
bounds the pulse again on its own clock (see ``guard``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .config import DecisionConfig
from .outputs import Signals
from .tracking import FaceState, Track


class Phase(StrEnum):
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    COOLDOWN = "cooldown"


@dataclass(frozen=True)
class FaceScore:
    """What one face of a decision looked like to the gate: its id, p(masked), its box height."""

    face: int
    p_masked: float
    height_px: int


@dataclass(frozen=True)
class Event:
    t: float
    kind: str  # unlock, relock, cancel, deny, clear
    faces: tuple[int, ...] = ()  # track ids involved
    detail: str = ""
    scores: tuple[FaceScore, ...] = ()  # the faces that decided it, as numbers (the detail says it in words)

    def __str__(self) -> str:
        who = f" face(s) {', '.join(f'#{i}' for i in self.faces)}" if self.faces else ""
        return f"{self.kind}{who}{': ' + self.detail if self.detail else ''}"


@dataclass
class Gate:
    cfg: DecisionConfig
    phase: Phase = Phase.LOCKED
    phase_end: float = 0.0  # when the pulse or the cooldown ends
    alarm_until: float = float("-inf")
    buzzer_until: float = float("-inf")
    unlocked_for: set[int] = field(default_factory=set)  # faces that already opened the gate
    denied: set[int] = field(default_factory=set)  # unmasked faces already signalled
    unlocks: int = 0

    def step(self, t: float, tracks: Sequence[Track]) -> tuple[Signals, list[Event]]:
        """Advance to time ``t`` with the faces now in view; return output levels and what happened."""
        cfg = self.cfg
        # Only a face in this very frame may open the door; a remembered unmasked face still blocks it.
        # (Faces too far away or too faint never get here: the analyzer drops them before classifying.)
        masked = [tr for tr in tracks if tr.state is FaceState.MASKED and tr.last_seen >= t]
        unmasked = [tr for tr in tracks if tr.state is FaceState.UNMASKED]
        present = {tr.id for tr in tracks}
        self.unlocked_for &= present
        events: list[Event] = []

        new_unmasked = [tr.id for tr in unmasked if tr.id not in self.denied]
        self.denied = {tr.id for tr in unmasked}
        if unmasked:
            if new_unmasked:
                fresh = [tr for tr in unmasked if tr.id in new_unmasked]
                events.append(Event(t, "deny", tuple(new_unmasked), _scores(fresh), _face_scores(fresh)))
                self.buzzer_until = t + cfg.buzzer_s
            self.alarm_until = t + cfg.alarm_s
        elif self.alarm_until != float("-inf") and t >= self.alarm_until:
            events.append(Event(t, "clear"))
            self.alarm_until = float("-inf")

        if self.phase is Phase.UNLOCKED:
            if unmasked and cfg.cancel_on_unmasked:
                ids = tuple(tr.id for tr in unmasked)
                events.append(Event(t, "cancel", ids, "unmasked face in view", _face_scores(unmasked)))
                self._cooldown(t)
            elif t >= self.phase_end:
                events.append(Event(t, "relock"))
                self._cooldown(t)
        if self.phase is Phase.COOLDOWN and t >= self.phase_end:
            self.phase = Phase.LOCKED
        if self.phase is Phase.LOCKED and masked and not unmasked:
            eligible = [tr for tr in masked if not (cfg.once_per_face and tr.id in self.unlocked_for)]
            if eligible:
                self.phase, self.phase_end = Phase.UNLOCKED, t + cfg.pulse_s
                # no unmasked face is in view (or there would be no unlock): the alarm of an earlier
                # one ends here, so the person at the door sees green alone
                self.alarm_until = float("-inf")
                self.unlocks += 1
                self.unlocked_for |= {tr.id for tr in masked}
                ids = tuple(tr.id for tr in eligible)
                events.append(Event(t, "unlock", ids, _scores(eligible), _face_scores(eligible)))

        relay = self.phase is Phase.UNLOCKED and t < self.phase_end
        # Red and green are never on together: an open door shows green (an unmasked face that arrives
        # during a pulse ends it, unless cancel_on_unmasked is off; then red waits for the pulse's end).
        red = (bool(unmasked) or t < self.alarm_until) and not relay
        return Signals(relay, relay, red, t < self.buzzer_until, self.unlocks), events

    def lose_source(self, t: float) -> tuple[Signals, list[Event]]:
        """The camera is gone: end any pulse and report it; the gate stays locked until frames return.

        Who was let in (or denied) is kept: a person still standing there when frames return within
        ``forget_after_s`` is the same face to the tracker, and is not let in (or beeped at) again.
        """
        events = [Event(t, "cancel", (), "camera lost")] if self.phase is Phase.UNLOCKED else []
        self.phase, self.phase_end = Phase.LOCKED, t
        self.alarm_until = self.buzzer_until = float("-inf")
        return Signals(unlocks=self.unlocks), events

    def _cooldown(self, t: float) -> None:
        self.phase, self.phase_end = Phase.COOLDOWN, t + self.cfg.cooldown_s


def _scores(tracks: Sequence[Track]) -> str:
    return ", ".join(f"#{tr.id} p(masked)={tr.score:.2f} {tr.height}px" for tr in tracks)


def _face_scores(tracks: Sequence[Track]) -> tuple[FaceScore, ...]:
    return tuple(FaceScore(tr.id, round(float(tr.score), 4), int(tr.height)) for tr in tracks)
