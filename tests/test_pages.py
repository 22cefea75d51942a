"""The pages' own logic without a browser: the kiosk's verdict, a pure function of /api/state,
run in Node where it is installed; and every text of the strings table in both languages."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import REPO

STATIC = REPO / "edge" / "web" / "static"


def verdicts(states: list[dict]) -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed")
    code = (
        f"const {{ verdict }} = require({json.dumps(str(STATIC / 'kiosk.js'))});"
        f"console.log(JSON.stringify({json.dumps(states)}.map(verdict)));"
    )
    r = subprocess.run([node, "-e", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def face(decision: str, height: int = 120) -> dict:
    return {"decision": decision, "height": height}


def test_the_kiosk_verdict_follows_the_door_the_faces_and_the_camera():
    up = {"camera": "up", "door": {"relay": False}, "min_face_px": 40}
    states = [
        {**up, "door": {"relay": True}, "faces": [face("masked")]},
        {**up, "faces": [face("unmasked"), face("masked")]},
        {**up, "faces": [], "too_small": 1},
        {**up, "faces": []},
        {**up, "camera": "reconnecting", "faces": [face("masked")]},
    ]
    assert verdicts(states) == ["welcome", "mask", "closer", "idle", "offline"]


def test_every_kiosk_text_is_in_english_and_german():
    strings = json.loads((STATIC / "strings.json").read_text(encoding="utf-8"))
    assert set(strings) == {"en", "de"} and set(strings["en"]) == set(strings["de"])
    assert {"welcome", "mask", "closer", "idle", "offline"} <= set(strings["en"])
    assert all(text.strip() for lang in strings.values() for text in lang.values())
