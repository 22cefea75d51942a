"""``maskgate run`` and ``maskgate outputs off|test``: the gate itself and its wiring."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from ..core.errors import ConfigError
from ..gate.config import DEFAULT_PATH, GateConfig
from .options import SYSTEM_NOTE, add_gate_options, gate_config

logger = logging.getLogger("maskgate")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the gate: camera, faces, mask decision, relay and LEDs",
        description="Run the gate until stopped (SIGTERM/SIGINT) or a file source ends. Reads "
        f"--config, else $MASKGATE_CONFIG, else {DEFAULT_PATH} if present, else built-in defaults.",
    )
    add_gate_options(p, default_note=SYSTEM_NOTE)
    p.add_argument("--validate-config", action="store_true", help="check the configuration, print it, exit")
    p.set_defaults(handler=_run)

    p = sub.add_parser(
        "sandbox",
        help="write the service's network sandbox (a systemd drop-in) for this configuration",
        description="Print, or write with --write, the drop-in for maskgate.service that lets through "
        "exactly the network this configuration needs (web.listen and web.allow, a stream camera's host, "
        "the MQTT broker) and nothing else. systemd/install.sh writes it; run it again after changing "
        "[web], [source] or [mqtt], "
        "then `systemctl daemon-reload` and restart.",
    )
    add_gate_options(p, default_note=SYSTEM_NOTE, shortcuts=())
    p.add_argument("--write", type=Path, metavar="DIR",
                   help="write DIR/network.conf (e.g. /etc/systemd/system/maskgate.service.d)")  # fmt: skip
    p.set_defaults(handler=_sandbox)

    p = sub.add_parser("outputs", help="drive the gate's GPIO outputs directly: off, or a wiring test")
    osub = p.add_subparsers(dest="outputs_command", required=True, metavar="ACTION")
    o = osub.add_parser("off", help="drive every configured output off (systemd ExecStopPost uses this)")
    add_gate_options(o, default_note=SYSTEM_NOTE, shortcuts=())
    o.set_defaults(handler=_outputs_off)
    o = osub.add_parser("test", help="pulse the relay, then light each LED and the buzzer in turn")
    add_gate_options(o, default_note=SYSTEM_NOTE, shortcuts=())
    o.set_defaults(handler=_outputs_test)


def _run(args: argparse.Namespace) -> int:
    if args.validate_config:
        return _validate(args)
    cfg, origin = gate_config(args)
    logger.info("configuration: %s", origin)
    from ..gate.service import run_gate

    stop = threading.Event()

    def request_stop(signum, _frame) -> None:
        logger.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, request_stop)
    if not (cfg.web.enabled or cfg.mqtt.enabled):
        return run_gate(cfg, stop)
    # The web server and the MQTT publisher observe the gate through a LiveState; aiohttp and
    # paho-mqtt load only here. The publisher is started first (its files are checked before the
    # models load) and stopped last: after the gate's loop has ended with the outputs off, it sends
    # the final state and 'offline'.
    from ..gate.config import gate_name
    from ..gate.live import LiveState

    live = LiveState()
    with contextlib.ExitStack() as observers:
        if cfg.mqtt.enabled:
            from ..mqtt.publisher import MqttPublisher

            observers.enter_context(MqttPublisher(cfg.mqtt, live, gate=gate_name(cfg)))
        if cfg.web.enabled:
            from ..web.server import WebServer

            observers.enter_context(WebServer(cfg.web, live))
        return run_gate(cfg, stop, live=live)


def _validate(args: argparse.Namespace) -> int:
    """Every problem of the configuration, then of the model files it names, one per line; or the
    resolved configuration as TOML when there is none."""
    from ..gate.config import model_problems

    try:
        cfg, origin = gate_config(args)
    except ConfigError as e:
        problems = getattr(e, "problems", [str(e)])
    else:
        problems = model_problems(cfg)
        if cfg.mqtt.enabled:
            from ..mqtt.publisher import file_problems

            problems += file_problems(cfg.mqtt)
    if problems:
        for problem in problems:
            print(f"maskgate: error: {problem}", file=sys.stderr)
        print(f"maskgate: {len(problems)} problem(s); the gate would not start", file=sys.stderr)
        return 2
    print(f"# {origin}: valid; its bundles load and verify")
    print(_as_toml(cfg))
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from ..core.atomic import write_text
    from ..gate.sandbox import DROPIN, network_sandbox

    cfg, _ = gate_config(args)
    text = network_sandbox(cfg).dropin()
    if args.write is None:
        print(text, end="")
        return 0
    if not args.write.is_dir():
        raise ConfigError(f"--write {args.write}: not a folder")
    write_text(args.write / DROPIN, text)
    print(f"wrote {args.write / DROPIN}; now: systemctl daemon-reload && systemctl restart maskgate")
    return 0


def _outputs(args: argparse.Namespace):
    from ..gate.outputs import Outputs

    cfg, _ = gate_config(args)
    return cfg, Outputs.from_config(cfg.outputs, pulse_s=cfg.decision.pulse_s)


def _outputs_off(args: argparse.Namespace) -> int:
    _, outputs = _outputs(args)
    with outputs:
        outputs.off()
        print(
            "outputs off: "
            + (", ".join(f"{d.name} ({d.pin})" for d in outputs.devices()) or "none configured")
        )
    return 0


def _outputs_test(args: argparse.Namespace) -> int:
    import time

    cfg, outputs = _outputs(args)
    with outputs:
        for device in outputs.devices():
            print(f"{device.name} ({device.pin}) on", flush=True)
            device.on()  # the relay's on() is its bounded pulse
            time.sleep(min(1.0, cfg.decision.pulse_s))
            device.off()
    return 0


def _as_toml(cfg: GateConfig) -> str:
    """The resolved configuration as TOML (what a file with every key set would say)."""
    lines = []
    for section, values in cfg.model_dump(mode="json").items():
        lines.append(f"\n[{section}]")
        for key, value in values.items():
            if value is None:  # TOML has no null: pins say false, other keys are left out
                lines.append(f"{key} = false" if key.endswith("_pin") else f"# {key} = (none)")
            else:
                lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines).lstrip()
