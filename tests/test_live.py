"""LiveState: what the gate hands its observers, bounded, thread-safe and cheap for the gate."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from fakes import detected_face
from maskgate.edge.gate.analyzer import Timings
from maskgate.edge.gate.live import LATENCY_BUCKETS_MS, LiveState
from maskgate.edge.gate.outputs import Signals


def test_the_event_ring_is_bounded_and_resumes_after_an_id():
    live = LiveState(max_events=5)
    ids = [live.event("deny", (i,)) for i in range(12)]
    assert ids == list(range(1, 13))  # ids keep growing past the ring's size
    assert [e.id for e in live.events_after(0)] == [8, 9, 10, 11, 12]  # only the latest 5 are kept
    assert [e.id for e in live.events_after(10)] == [11, 12]
    assert live.events_after(12) == [] and live.last_event_id == 12
    assert live.snapshot()["decisions"] == {"deny": 12}


def test_a_frame_is_held_by_reference_with_its_faces_door_and_timings():
    t = [0.0]
    live = LiveState(clock=lambda: t[0])
    image = np.zeros((8, 8, 3), np.uint8)
    for i in range(5):
        t[0] = i * 0.1
        live.frame(image, [detected_face(True)], Timings(4.0, 1.0, 2.0),
                   Signals(True, True, False, False, 1), "unlocked")  # fmt: skip
    seq, held, faces = live.latest()
    assert seq == 5 and held is image  # no copy in the gate's thread
    state = live.snapshot()
    assert state["camera"] == "up" and state["fps"] == pytest.approx(10.0)
    assert state["door"]["relay"] and state["door"]["phase"] == "unlocked"
    assert state["faces"][0]["decision"] == "masked" and state["faces"][0]["height"] == 120
    assert state["latency_ms"] == {"detect": 4.0, "preprocess": 1.0, "classify": 2.0, "total": 7.0}
    assert state["counters"]["frames"] == 5 and state["counters"]["relay_pulses"] == 1
    h = live.metrics()["histograms"]["total"]
    assert h.count == 5 and sum(h.counts) == 5 and len(h.counts) == len(LATENCY_BUCKETS_MS) + 1


def test_a_lost_camera_locks_the_door_in_the_state_and_a_return_counts_as_a_reconnect():
    live = LiveState()
    live.frame(None, [], None, Signals(True, True, False, False, 1))
    live.camera("lost")
    assert live.snapshot()["door"]["relay"] is False
    live.camera("reconnecting")
    live.camera("up")
    assert live.snapshot()["counters"]["reconnects"] == 1
    with pytest.raises(ValueError, match="camera status"):
        live.camera("sideways")


def test_many_writers_and_readers_at_once_lose_no_count():
    live = LiveState(max_events=10)
    image = np.zeros((2, 2, 3), np.uint8)

    def write():
        for _ in range(500):
            live.frame(image, [], Timings(1.0, 1.0, 1.0))
            live.event("clear")

    def read():
        for _ in range(500):
            live.snapshot()
            live.events_after(0)

    threads = [threading.Thread(target=f) for f in (write, write, read, read)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    state = live.snapshot()
    assert state["counters"]["frames"] == 1000 and state["last_event_id"] == 1000
    assert len(live.events_after(0)) == 10


def test_listeners_are_told_after_each_event_and_camera_change_outside_the_lock():
    live = LiveState()
    seen = []
    # a listener that reads the state back proves the lock is released before it is called
    live.add_listener(lambda: seen.append((live.last_event_id, live.snapshot()["camera"])))
    live.event("unlock", (1,))
    live.camera("lost")
    live.event("camera_lost", detail="camera unplugged")
    live.frame(None, [], None)  # frames are not announced: readers look at their own pace
    assert seen == [(1, "starting"), (1, "lost"), (2, "lost")]
    assert live.snapshot()["decisions"] == {"unlock": 1}  # the camera's events are no decisions
