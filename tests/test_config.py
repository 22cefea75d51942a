"""The gate configuration: defaults work, the shipped examples are valid, mistakes name their key."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from maskgate.edge.core.errors import ConfigError
from maskgate.edge.gate.config import GateConfig, build, load, parse_override, read_toml


def test_defaults_are_a_complete_configuration():
    cfg = GateConfig()
    assert cfg.detector.backend == "retinaface-int8" and cfg.detector.input_size is None  # the backend's own
    assert cfg.decision.min_detection_score == 0.7  # the backend's, unless set
    ssd = build({"detector": {"backend": "ssd-int8"}})
    assert ssd.decision.min_detection_score == 0.5
    set_ = build({"detector": {"backend": "ssd-int8"}, "decision": {"min_detection_score": 0.9}})
    assert set_.decision.min_detection_score == 0.9
    assert cfg.outputs.relay_pin == 17 and cfg.decision.pulse_s == 3.0
    assert cfg.service.snapshot_dir is None  # no images stored unless asked


@pytest.mark.parametrize("name", ["config.toml", "demo.toml"])
def test_shipped_example_configs_are_valid_and_document_every_key(name):
    path = REPO / "systemd" / name
    cfg, origin = load(path)
    assert origin == str(path)
    if name == "config.toml":  # the documented example names every key of every section, set or commented
        text = path.read_text()
        sections = dict(re.findall(r"^\[(\w+)\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S))
        assert set(sections) == set(GateConfig.model_fields)
        for section, fields in GateConfig.model_fields.items():
            documented = set(re.findall(r"^#? ?(\w+) =", sections[section], re.M))
            assert documented == set(fields.annotation.model_fields), section


@pytest.mark.parametrize(
    "toml, message",
    [
        ("[decision]\npulse_sec = 3", "decision.pulse_sec: unknown key"),
        ("[detektor]\nconfidence = 0.5", "detektor: unknown key"),
        ("[detector]\nconfidence = 1.5", "detector.confidence: Input should be less than or equal to 0.99"),
        ("[detector]\ninput_size = [300]", "detector.input_size"),
        ("[detector]\ninput_size = 'big'", "detector.input_size"),
        (
            "[detector]\nbackend = 'yolo'",
            "detector.backend: Input should be 'retinaface-int8', 'ssd-int8', 'ssd-opencv' or 'unet'",
        ),
        ("[outputs]\npin_factory = 'gpio'", "outputs.pin_factory"),
        ("[outputs]\nrelay_pin = 17\nred_pin = 17", "outputs: pin 17 is given to more than one output"),
        ("[decision]\nwindow = 4\nconfirm = 2", "decision: confirm (2) must be more than half of window (4)"),
        (
            "[source]\nreconnect_initial_s = 5\nreconnect_max_s = 1",
            "source: reconnect_max_s must be at least",
        ),
        ("source = 3", "source: expected a table of settings ([source] in TOML) (got 3)"),
        ("[mqtt]\ntopic_prefix = 'site/+/gate'", "mqtt.topic_prefix: a topic to publish to cannot hold '+'"),
        ("[mqtt]\ntopic_prefix = '/site/gate'", "mqtt.topic_prefix: expected topic levels joined by '/'"),
        ("[mqtt]\nqos = 3", "mqtt.qos: Input should be less than or equal to 2"),
        ("[mqtt]\ntls_ca_file = 'ca.pem'", "mqtt: tls_ca_file is set but tls is false"),
        ("[mqtt]\ntls = true\ntls_cert_file = 'c.pem'", "mqtt: tls_cert_file and tls_key_file go together"),
        ("[mqtt]\npassword_file = 'pw'", "mqtt: password_file is set without a username"),
        ("[service]\ngate_name = 'front door'", "service.gate_name: expected letters, digits"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_key(tmp_path, toml, message):
    path = tmp_path / "gate.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as e:
        load(path)
    text = str(e.value)
    assert text.startswith(f"config {path}: ") and message in text and "\n" not in text


def test_file_problems_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        read_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[decision\npulse_s = 3")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        read_toml(bad)


def test_overrides_go_through_the_same_validation(tmp_path):
    path = tmp_path / "gate.toml"
    path.write_text("[detector]\nconfidence = 0.7\n")
    overrides = [
        "detector.input_size=[640, 480]",
        "source.uri=0",
        "outputs.red_pin=false",
        "outputs.green_pin=none",
    ]
    cfg, _ = load(path, [parse_override(o) for o in overrides])
    assert cfg.detector.confidence == 0.7 and cfg.detector.input_size == (640, 480)
    assert cfg.source.uri == "0"  # a camera index, whether typed as a number or text
    assert cfg.outputs.red_pin is None and cfg.outputs.green_pin is None and cfg.outputs.relay_pin == 17
    assert parse_override("classifier.bundle=models/x") == ("classifier.bundle", "models/x")
    with pytest.raises(ConfigError, match="decision.pulse_s: Input should be less than or equal to 60"):
        load(path, [parse_override("decision.pulse_s=600")])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("pulse_s")


def test_batch_commands_do_not_read_the_system_config(monkeypatch, tmp_path):
    path = tmp_path / "site.toml"
    path.write_text("[detector]\nconfidence = 0.9\n")
    monkeypatch.setenv("MASKGATE_CONFIG", str(path))
    assert load()[0].detector.confidence == 0.9
    assert load(system_default=False) == (build({}), "built-in defaults")
