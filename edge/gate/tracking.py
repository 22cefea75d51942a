"""Faces followed across frames, each with a confirmed state that one bad frame cannot flip.

A frame's classification is a vote; a face becomes *masked* or *unmasked*
once ``confirm`` of its last ``window`` votes agree, and stays so until
``confirm`` votes say otherwise (hysteresis). With ``confirm`` above half the
window, the two can never both hold. Pure Python, fed with timestamps, so
every case is a unit test without a camera.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ..core.geometry import Box, greedy_match, iou_matrix
from .config import DecisionConfig


class FaceState(StrEnum):
    PENDING = "pending"  # not enough agreeing votes yet
    MASKED = "masked"
    UNMASKED = "unmasked"


@dataclass(frozen=True)
class Observation:
    """One face in one frame, as the tracker needs it."""

    box: Box
    masked: bool  # this frame's vote
    score: float  # p(masked) of this frame, for logs


@dataclass
class Track:
    id: int
    box: Box
    last_seen: float
    votes: deque[bool]
    state: FaceState = FaceState.PENDING
    score: float = 0.0

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]


@dataclass
class Tracker:
    iou_match: float = 0.3
    window: int = 5
    confirm: int = 3
    forget_after_s: float = 1.0
    tracks: list[Track] = field(default_factory=list)
    _next_id: int = 1

    @classmethod
    def from_config(cls, cfg: DecisionConfig) -> Tracker:
        """The tracker the decision settings describe (the gate, the benchmark and tests use this)."""
        return cls(
            iou_match=cfg.iou_match, window=cfg.window, confirm=cfg.confirm, forget_after_s=cfg.forget_after_s
        )

    def update(self, t: float, observations: Sequence[Observation]) -> list[Track]:
        """Match this frame's faces to known ones, vote, and forget faces gone too long.

        Time that runs backwards (a video file reopened after it was lost starts again at 0) is a
        new timeline: what was seen on the old one says nothing now, so every face is forgotten.
        """
        if any(t < tr.last_seen for tr in self.tracks):
            self.tracks = []
        self.tracks = [tr for tr in self.tracks if t - tr.last_seen <= self.forget_after_s]
        pairs = greedy_match(
            iou_matrix([tr.box for tr in self.tracks], [o.box for o in observations]), self.iou_match
        )
        matched = {c for _, c in pairs}
        for r, c in pairs:
            self._vote(self.tracks[r], t, observations[c])
        for c, obs in enumerate(observations):
            if c not in matched:
                track = Track(self._next_id, obs.box, t, deque(maxlen=self.window))
                self._next_id += 1
                self.tracks.append(track)
                self._vote(track, t, obs)
        return list(self.tracks)

    def _vote(self, track: Track, t: float, obs: Observation) -> None:
        track.box, track.last_seen, track.score = obs.box, t, obs.score
        track.votes.append(obs.masked)
        masked = sum(track.votes)
        if masked >= self.confirm:
            track.state = FaceState.MASKED
        elif len(track.votes) - masked >= self.confirm:
            track.state = FaceState.UNMASKED
