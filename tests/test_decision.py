"""The tracker and the gate state machine, fed with timestamps: no camera, no sleeping."""

from __future__ import annotations

from dataclasses import replace

import pytest

from maskgate.edge.core.geometry import greedy_match, iou_matrix
from maskgate.edge.gate.config import DecisionConfig
from maskgate.edge.gate.decision import Gate, Phase
from maskgate.edge.gate.outputs import OFF
from maskgate.edge.gate.tracking import FaceState, Observation, Tracker

pytestmark = pytest.mark.arm64  # in `make check-arm64`'s subset (pyproject.toml)

FPS = 10.0
NEAR = (100, 100, 200, 220)  # a face 120 px high, close to the camera
OTHER = (300, 100, 400, 220)


def obs(masked: bool, box=NEAR, p: float | None = None) -> Observation:
    return Observation(box, masked, p if p is not None else (0.95 if masked else 0.05))


class Scene:
    """Frames at FPS through a tracker and a gate; records output levels and events per frame."""

    def __init__(self, **decision) -> None:
        self.cfg = DecisionConfig(**decision)
        self.tracker = Tracker.from_config(self.cfg)
        self.gate = Gate(self.cfg)
        self.t = 0.0
        self.levels = []
        self.events = []

    def frames(self, n: int, *observations: Observation):
        for _ in range(n):
            tracks = self.tracker.update(self.t, list(observations))
            levels, events = self.gate.step(self.t, tracks)
            self.levels.append((self.t, levels))
            self.events += [(e.t, e.kind) for e in events]
            self.t = round(self.t + 1 / FPS, 6)
        return self

    def kinds(self) -> list[str]:
        return [k for _, k in self.events]

    def relay_on_times(self) -> list[float]:
        return [t for t, lv in self.levels if lv.relay]


def test_iou_and_greedy_matching():
    iou = iou_matrix([(0, 0, 10, 10), (20, 20, 30, 30)], [(0, 0, 10, 5), (21, 21, 31, 31), (50, 50, 60, 60)])
    assert iou[0, 0] == pytest.approx(0.5)
    assert iou[1, 1] == pytest.approx(81 / 119)
    assert iou[:, 2].tolist() == [0.0, 0.0]
    assert greedy_match(iou, 0.3) == [(1, 1), (0, 0)]
    assert greedy_match(iou, 0.6) == [(1, 1)]
    assert iou_matrix([], [(0, 0, 1, 1)]).shape == (0, 1)


def test_a_face_is_confirmed_only_by_enough_votes_and_one_bad_frame_does_not_flip_it():
    tr = Tracker(window=5, confirm=3)
    votes = [True, True, False, True, False]
    states = [tr.update(i / FPS, [obs(m)])[0].state for i, m in enumerate(votes)]
    assert states == [
        FaceState.PENDING,
        FaceState.PENDING,
        FaceState.PENDING,
        FaceState.MASKED,
        FaceState.MASKED,
    ]
    # the window is now T,F,T,F,F: the third unmasked vote flips it, not the first or second
    assert tr.update(0.5, [obs(False)])[0].state is FaceState.UNMASKED
    assert len(tr.tracks) == 1 and list(tr.tracks[0].votes) == [True, False, True, False, False]


def test_faces_keep_their_identity_and_are_forgotten_after_a_while():
    tr = Tracker(forget_after_s=0.5)
    a, b = tr.update(0.0, [obs(True, NEAR), obs(False, OTHER)])
    moved = (110, 104, 210, 224)
    tracks = tr.update(0.1, [obs(False, OTHER), obs(True, moved)])
    assert {t.id: t.box for t in tracks} == {a.id: moved, b.id: OTHER}
    assert tr.update(0.55, []) != []  # 0.45 s unseen: still remembered
    assert tr.update(0.7, []) == []  # 0.6 s: gone
    assert tr.update(0.8, [obs(True)])[0].id not in (a.id, b.id)


def test_masked_face_unlocks_one_bounded_pulse_then_cooldown():
    s = Scene(pulse_s=1.0, cooldown_s=0.5).frames(40, obs(True))
    on = s.relay_on_times()
    assert on[0] == pytest.approx(0.2)  # third frame: 3 of 5 votes
    assert on[-1] - on[0] < 1.0  # never longer than pulse_s
    assert len(on) == 10
    assert s.kinds() == ["unlock", "relock"]  # once per face: the same person does not re-open it
    assert all(lv.green == lv.relay for _, lv in s.levels)
    assert s.gate.phase is Phase.LOCKED


def test_a_new_face_can_unlock_again_after_the_cooldown_but_not_during_it():
    s = Scene(pulse_s=0.5, cooldown_s=1.0, forget_after_s=0.2).frames(8, obs(True))
    s.frames(3)  # the first person leaves
    s.frames(20, obs(True, OTHER))  # a second person arrives during the cooldown
    unlocks = [t for t, k in s.events if k == "unlock"]
    assert len(unlocks) == 2
    relock = next(t for t, k in s.events if k == "relock")
    assert unlocks[1] >= relock + 1.0 - 1e-9


def test_once_per_face_off_reopens_for_the_same_person_after_cooldown():
    s = Scene(pulse_s=0.5, cooldown_s=0.5, once_per_face=False).frames(30, obs(True))
    assert s.kinds().count("unlock") >= 2


def test_no_unlock_while_an_unmasked_face_is_present_and_red_signals_it():
    s = Scene(alarm_s=1.0, buzzer_s=0.3).frames(20, obs(True, NEAR), obs(False, OTHER))
    assert s.relay_on_times() == []
    assert s.kinds() == ["deny"]
    red = [t for t, lv in s.levels if lv.red]
    buzz = [t for t, lv in s.levels if lv.buzzer]
    assert red[0] == pytest.approx(0.2) and red[-1] == pytest.approx(1.9)
    assert buzz == pytest.approx([0.2, 0.3, 0.4])  # buzzer_s after the denial, then quiet
    s.frames(19)  # everyone leaves: the face is remembered forget_after_s, red stays alarm_s more
    assert s.kinds() == ["deny"] and s.levels[-1][1].red
    s.frames(2)
    assert s.kinds() == ["deny", "clear"]
    assert not s.levels[-1][1].red


def test_an_unmasked_face_cancels_a_running_pulse():
    s = Scene(pulse_s=5.0).frames(5, obs(True, NEAR))
    assert s.levels[-1][1].relay
    s.frames(5, obs(True, NEAR), obs(False, OTHER))
    assert s.kinds() == ["unlock", "deny", "cancel"]
    assert not s.levels[-1][1].relay


def test_cancel_on_unmasked_off_lets_the_pulse_run():
    s = (
        Scene(pulse_s=5.0, cancel_on_unmasked=False)
        .frames(5, obs(True))
        .frames(5, obs(True), obs(False, OTHER))
    )
    assert "cancel" not in s.kinds() and s.levels[-1][1].relay


def test_a_remembered_masked_face_out_of_view_does_not_unlock():
    s = Scene(pulse_s=0.5, cooldown_s=0.1, once_per_face=False, forget_after_s=1.0)
    s.frames(5, obs(True)).frames(9)  # unlocked, then out of view but remembered past the cooldown
    assert s.kinds() == ["unlock", "relock"]


def test_with_no_alarm_time_red_is_on_exactly_while_an_unmasked_face_is_confirmed():
    s = Scene(alarm_s=0.0).frames(5, obs(False)).frames(12)
    red = [t for t, lv in s.levels if lv.red]
    assert red[0] == pytest.approx(0.2) and red[-1] < 1.5  # until the face is forgotten, not after


def test_back_to_back_unlocks_with_no_cooldown_are_counted_apart():
    s = Scene(pulse_s=0.3, cooldown_s=0.0, once_per_face=False).frames(12, obs(True))
    unlocks = [lv.unlocks for _, lv in s.levels]
    assert s.kinds().count("unlock") == 4 and unlocks[-1] == 4  # at 0.2, 0.5, 0.8 and 1.1 s
    assert all(lv.relay for _, lv in s.levels[2:])  # the relay level never drops between pulses


def test_one_misclassified_frame_neither_opens_nor_closes():
    s = Scene().frames(2, obs(False)).frames(1, obs(True)).frames(2, obs(False))
    assert s.relay_on_times() == []
    s2 = Scene(pulse_s=5.0).frames(4, obs(True)).frames(1, obs(False)).frames(3, obs(True))
    assert "cancel" not in s2.kinds() and s2.levels[-1][1].relay


def test_losing_the_camera_locks_at_once_and_forgets():
    s = Scene(pulse_s=5.0).frames(4, obs(True))
    assert s.levels[-1][1].relay
    levels, events = s.gate.lose_source(s.t)
    assert replace(levels, unlocks=0) == OFF and [e.kind for e in events] == ["cancel"]
    assert s.gate.phase is Phase.LOCKED


@pytest.mark.parametrize(
    "kwargs, message",
    [({"window": 4, "confirm": 2}, "more than half"), ({"window": 3, "confirm": 4}, "cannot exceed")],
)
def test_vote_settings_that_could_confirm_both_ways_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DecisionConfig(**kwargs)


def test_red_and_green_are_never_on_together():
    """The alarm of an unmasked face that left ends at a masked person's unlock; an unmasked face
    arriving during a pulse that is not cancelled waits for the pulse's end to turn red on."""
    s = Scene(alarm_s=3.0, pulse_s=1.0, forget_after_s=0.2).frames(5, obs(False, OTHER))
    s.frames(3)  # the unmasked person leaves; red stays for alarm_s
    assert s.levels[-1][1].red
    s.frames(10, obs(True))  # a masked person: unlock ends the alarm
    assert "unlock" in s.kinds() and not s.levels[-1][1].red
    s2 = (
        Scene(pulse_s=1.0, cancel_on_unmasked=False)
        .frames(4, obs(True))
        .frames(15, obs(True), obs(False, OTHER))
    )
    assert "cancel" not in s2.kinds()
    for s_ in (s, s2):
        assert not any(lv.red and lv.green for _, lv in s_.levels)
    assert any(lv.red for _, lv in s2.levels[-5:])  # after the pulse, the unmasked face shows red


def test_a_person_still_in_view_after_a_short_outage_is_not_let_in_again():
    s = Scene(pulse_s=0.5, cooldown_s=0.2, forget_after_s=1.0).frames(8, obs(True))
    assert s.kinds() == ["unlock", "relock"]
    s.gate.lose_source(s.t)
    s.t = round(s.t + 0.5, 6)  # half a second without frames
    s.frames(10, obs(True))
    assert s.kinds().count("unlock") == 1
    # a longer outage than forget_after_s: whoever stands there now is a new face
    s.gate.lose_source(s.t)
    s.t = round(s.t + 1.5, 6)
    s.frames(10, obs(True))
    assert s.kinds().count("unlock") == 2


def test_time_running_backwards_is_a_new_timeline():
    """A video reopened after it was lost starts at 0 again: the faces of the old timeline are gone,
    not 'seen in the future' and kept in view for ever."""
    tr = Tracker(forget_after_s=1.0)
    tr.update(50.0, [obs(True)])
    assert tr.update(0.0, []) == []
    assert [t.id for t in tr.update(0.1, [obs(True)])] == [2]
