"""Home Assistant MQTT discovery: the retained configs that make a gate appear as a device.

One config per entity under ``<discovery_prefix>/<component>/<node>/<object>/config``, each with
the same device block (so Home Assistant groups them as one device named after the gate) and the
availability topic (so every entity shows "unavailable" when the gate is offline or its Last Will
fires). The entities read the gate's own topics through value templates; nothing is published
twice for Home Assistant's sake except ``event_type`` in the events, which its event entity needs.
Configs are re-sent on every connection: a broker without persistence forgets retained messages
when it restarts.
"""

from __future__ import annotations

import re
from typing import Any

from .payloads import EVENT_KINDS

ONLINE, OFFLINE = "online", "offline"


def node_id(gate: str) -> str:
    """The gate's name as Home Assistant's discovery topics allow it ([a-zA-Z0-9_-])."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", gate)


def discovery_configs(
    *, gate: str, prefix: str, discovery_prefix: str, version: str
) -> dict[str, dict[str, Any]]:
    """Topic -> config for every entity of one gate."""
    node = node_id(gate)
    state, events, stats = f"{prefix}/state", f"{prefix}/events", f"{prefix}/stats"
    common = {
        "availability_topic": f"{prefix}/available",
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": {
            "identifiers": [f"maskgate_{node}"],
            "name": gate,
            "manufacturer": "maskgate",
            "model": "face-mask gate",
            "sw_version": version,
        },
        "origin": {"name": "maskgate", "sw_version": version},
    }

    def on_off(test: str) -> str:
        return "{{ 'ON' if " + test + " else 'OFF' }}"

    entities: dict[tuple[str, str], dict[str, Any]] = {
        ("binary_sensor", "door"): {
            "name": "Door",
            "device_class": "lock",  # Home Assistant's lock class: on means unlocked
            "state_topic": state,
            "value_template": on_off("value_json.door == 'unlocked'"),
        },
        ("binary_sensor", "alarm"): {
            "name": "Unmasked face",
            "device_class": "problem",
            "state_topic": state,
            "value_template": on_off("value_json.alarm"),
        },
        ("binary_sensor", "camera"): {
            "name": "Camera",
            "device_class": "connectivity",
            "entity_category": "diagnostic",
            "state_topic": state,
            "value_template": on_off("value_json.camera == 'up'"),
        },
        ("sensor", "masked_faces"): {
            "name": "Masked faces in view",
            "icon": "mdi:face-mask",
            "state_class": "measurement",
            "state_topic": state,
            "value_template": "{{ value_json.faces.masked }}",
        },
        ("sensor", "unmasked_faces"): {
            "name": "Unmasked faces in view",
            "icon": "mdi:face-man",
            "state_class": "measurement",
            "state_topic": state,
            "value_template": "{{ value_json.faces.unmasked }}",
        },
        ("sensor", "unlocks"): {
            "name": "Unlocks",
            "icon": "mdi:door-open",
            "state_class": "total_increasing",
            "state_topic": state,
            "value_template": "{{ value_json.unlocks }}",
        },
        ("sensor", "denials"): {
            "name": "Denials",
            "icon": "mdi:door-closed-lock",
            "state_class": "total_increasing",
            "state_topic": state,
            "value_template": "{{ value_json.denials }}",
        },
        ("sensor", "fps"): {
            "name": "Frame rate",
            "entity_category": "diagnostic",
            "state_class": "measurement",
            "unit_of_measurement": "fps",
            "state_topic": stats,
            "value_template": "{{ value_json.fps }}",
        },
        ("event", "decision"): {
            "name": "Decision",
            "state_topic": events,  # the payload's event_type names the event; its other keys are attributes
            "event_types": list(EVENT_KINDS),
        },
    }
    return {
        f"{discovery_prefix}/{component}/{node}/{obj}/config": {
            **body,
            "unique_id": f"maskgate_{node}_{obj}",
            **common,
        }
        for (component, obj), body in entities.items()
    }
