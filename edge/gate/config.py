"""The gate's configuration: one TOML file, validated into one typed object.

Every field has a default, a description and bounds, so an empty file (or
none at all) is a working configuration and a typo is caught at start-up,
not at the first masked face. Unknown keys are errors: a misspelt
``pulse_sec`` silently ignored would leave the door open for the default time.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator

from ..core.errors import ConfigError
from ..core.settings import Section, error_lines
from ..detectors.config import GATE_MIN_SCORE, DetectorConfig

DEFAULT_PATH = Path("/etc/maskgate/config.toml")
CONFIG_ENV = "MASKGATE_CONFIG"


def _no_pin(value: Any) -> Any:
    """TOML has no null: ``false`` or ``"none"`` says an output is not fitted."""
    if value is False or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    return value


def _index_as_text(value: Any) -> Any:
    """``uri = 0`` in TOML (or ``--set source.uri=0``) is camera 0, as ``"0"`` is."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Uri = Annotated[str, BeforeValidator(_index_as_text)]

# The Raspberry Pi's 40-pin header: physical pin -> BCM GPIO number; the others are power and ground.
HEADER = {3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10, 21: 9,
          22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19, 36: 16, 37: 26,
          38: 20, 40: 21}  # fmt: skip
POWER = {1: "3V3", 17: "3V3", 2: "5V", 4: "5V"} | dict.fromkeys((6, 9, 14, 20, 25, 30, 34, 39), "ground")
PIN_FORMS = "a BCM number 0-27 or GPIO17, BCM17, BOARD11, J8:11; false for none"


def _pin(value: Any) -> int | None:
    """A pin in any form gpiozero accepts, as its BCM number, so that 17, "GPIO17", "BCM17",
    "BOARD11" and "J8:11" are one pin (and two outputs cannot share it under two names)."""
    value = _no_pin(value)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected {PIN_FORMS}")
    text = str(value).strip().upper()
    for prefix in ("GPIO", "BCM"):
        if text.startswith(prefix) and text[len(prefix) :].isdigit():
            text = text[len(prefix) :]
            break
    else:
        for prefix in ("BOARD", "J8:"):
            if text.startswith(prefix) and text[len(prefix) :].isdigit():
                physical = int(text[len(prefix) :])
                if physical in POWER:
                    raise ValueError(f"header pin {physical} is {POWER[physical]}, not a GPIO")
                if physical not in HEADER:
                    raise ValueError(f"the 40-pin header has no pin {physical}")
                return HEADER[physical]
    if not text.lstrip("-").isdigit():
        raise ValueError(f"expected {PIN_FORMS}")
    bcm = int(text)
    if not 0 <= bcm <= 27:
        raise ValueError(f"GPIO{bcm} is not on the 40-pin header (GPIO0-GPIO27)")
    return bcm


Pin = Annotated[int | None, BeforeValidator(_pin)]


class SourceConfig(Section):
    uri: Uri = Field(
        "picamera",
        description="'picamera'; a camera index ('0'); a video file; an rtsp:// or http(s):// URL; "
        "an image file, folder or glob",
    )
    width: int = Field(640, ge=64, le=4096, description="capture width asked of cameras (px)")
    height: int = Field(480, ge=48, le=4096, description="capture height asked of cameras (px)")
    fps: float = Field(15.0, gt=0, le=120, description="frame rate asked of cameras; the pace of files")
    pace: bool = Field(
        True, description="files and images: deliver frames at `fps` as a camera would (`run` only)"
    )
    frames_per_image: int = Field(
        1, ge=1, le=10_000, description="images: frames each still stands for, as if a person stood still"
    )
    loop: bool = Field(False, description="files and images: start again at the end instead of stopping")
    max_image_mp: float = Field(
        40.0,
        gt=0,
        le=1000,
        description="images: a file whose header claims more megapixels than this is skipped undecoded",
    )
    max_frames: int | None = Field(None, ge=1, description="stop after this many frames (demos, tests)")
    read_timeout_s: float = Field(
        5.0, gt=0, le=120, description="a live source with no new frame for this long counts as lost"
    )
    reconnect_initial_s: float = Field(
        0.5, gt=0, le=60, description="first wait before reopening a lost source"
    )
    reconnect_max_s: float = Field(10.0, gt=0, le=600, description="longest wait between reopen attempts")

    @model_validator(mode="after")
    def _backoff(self) -> SourceConfig:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be at least reconnect_initial_s")
        return self


class ClassifierConfig(Section):
    bundle: Path | None = Field(None, description="classifier bundle folder (default: the one shipped)")
    threads: int = Field(0, ge=0, le=64, description="LiteRT threads (0 = one per CPU core)")
    threshold: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="p(with_mask) from which a face counts as masked (default: bundle's)",
    )
    incorrect_is_masked: bool = Field(
        False, description="count 'mask worn incorrectly' as masked (3-class models)"
    )


class DecisionConfig(Section):
    window: int = Field(5, ge=1, le=100, description="frames of a face's recent history that vote")
    confirm: int = Field(
        3, ge=1, le=100, description="votes of the window needed to confirm a face masked or unmasked"
    )
    iou_match: float = Field(
        0.3, gt=0.0, lt=1.0, description="box overlap that makes a detection the same face"
    )
    forget_after_s: float = Field(1.0, gt=0, le=60, description="a face not seen for this long is gone")
    min_face_px: int = Field(
        40, ge=1, le=4096, description="faces smaller than this (box height, px) are too far to decide on"
    )
    min_detection_score: float | None = Field(
        None,
        ge=0.01,
        le=0.99,
        description="fainter detections neither open nor block the gate (default: the detector "
        "backend's, 0.7 for retinaface-int8, 0.5 for the others)",
    )
    pulse_s: float = Field(3.0, gt=0, le=60, description="how long the relay stays on per unlock")
    cooldown_s: float = Field(2.0, ge=0, le=600, description="wait after a pulse before the next unlock")
    once_per_face: bool = Field(
        True, description="unlock once per confirmed face, not again while the same person stays"
    )
    cancel_on_unmasked: bool = Field(
        True, description="end a pulse early when an unmasked face is confirmed (tailgating)"
    )
    alarm_s: float = Field(
        2.0, ge=0, le=60, description="the red LED stays on this long after an unmasked face leaves"
    )
    buzzer_s: float = Field(0.5, ge=0, le=10, description="how long the buzzer sounds per newly denied face")

    @model_validator(mode="after")
    def _votes(self) -> DecisionConfig:
        if self.confirm > self.window:
            raise ValueError(f"confirm ({self.confirm}) cannot exceed window ({self.window})")
        if 2 * self.confirm <= self.window:
            raise ValueError(
                f"confirm ({self.confirm}) must be more than half of window ({self.window}), "
                "or a face could be confirmed masked and unmasked at once"
            )
        return self


class OutputsConfig(Section):
    pin_factory: Literal["auto", "mock", "lgpio", "rpigpio", "pigpio", "native"] = Field(
        "auto", description="gpiozero pin factory: 'auto' picks the board's; 'mock' simulates pins"
    )
    relay_pin: Pin = Field(17, description=f"door relay ({PIN_FORMS})")
    relay_active_high: bool = Field(True, description="the relay board switches on a high level")
    relay_guard: bool = Field(
        True,
        description="drive the relay and the green LED from a separate guard process that ends every "
        "pulse on its own clock, even if the gate process hangs or dies (recommended)",
    )
    green_pin: Pin = Field(27, description="green LED: a pulse is running")
    red_pin: Pin = Field(22, description="red LED: an unmasked face is present")
    leds_active_high: bool = Field(True, description="the LEDs light on a high level")
    buzzer_pin: Pin = Field(None, description="buzzer sounding with the red LED; false = no buzzer")
    buzzer_active_high: bool = Field(True, description="the buzzer sounds on a high level")

    @model_validator(mode="after")
    def _distinct_pins(self) -> OutputsConfig:
        named = {k: getattr(self, k) for k in ("relay_pin", "green_pin", "red_pin", "buzzer_pin")}
        pins = [p for p in named.values() if p is not None]
        dup = sorted({p for p in pins if pins.count(p) > 1})
        if dup:
            who = ", ".join(k for k, p in named.items() if p == dup[0])
            raise ValueError(f"pin {dup[0]} is given to more than one output ({who}; GPIO{dup[0]})")
        return self


GATE_NAME_FORM = "letters, digits, '-', '_' or '.', at most 64, starting with a letter or digit"


def _gate_name_form(value: str | None) -> str | None:
    if value is None:
        return None
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
        raise ValueError(f"expected {GATE_NAME_FORM} (it names the gate in MQTT topics and dashboards)")
    return value


class ServiceConfig(Section):
    gate_name: str | None = Field(
        None,
        description="this gate's name in MQTT topics and Home Assistant (default: the host name)",
    )
    stats_every_s: float = Field(
        60.0, ge=1, le=86_400, description="interval of the summary log line (frames, fps, latency)"
    )
    snapshot_dir: Path | None = Field(
        None, description="save the frame of each unlock and denial here; none = store no images"
    )
    snapshot_max_mb: float = Field(
        100.0, gt=0, le=100_000, description="oldest snapshots are deleted beyond this total size"
    )

    @field_validator("gate_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return _gate_name_form(value)


def gate_name(cfg: GateConfig) -> str:
    """``service.gate_name``, else the host name (its first label, as a gate name allows)."""
    if cfg.service.gate_name is not None:
        return cfg.service.gate_name
    import socket

    host = socket.gethostname().split(".")[0]
    host = re.sub(r"[^A-Za-z0-9_-]", "-", host).strip("-_")[:64]
    return host or "maskgate"


LOOPBACK_HOSTS = ("localhost", "::1")


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8080`` for IPv6) as its host and port; ValueError if it is neither."""
    host, sep, port = listen.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.removeprefix("[").removesuffix("]"), int(port)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebConfig(Section):
    enabled: bool = Field(
        False, description="serve the live view, kiosk screen, HTTP API and metrics from `maskgate run`"
    )
    listen: str = Field(
        "127.0.0.1:8080",
        description="HOST:PORT to listen on; any address but loopback needs web.token or web.token_file",
    )
    token: SecretStr | None = Field(None, description="access token (16+ characters) clients must present")
    token_file: Path | None = Field(
        None, description="file holding the access token, readable by the service user alone"
    )
    stream_fps: float = Field(10.0, gt=0, le=30, description="most frames per second of the live picture")
    stream_width: int = Field(
        640, ge=160, le=1920, description="the live picture is scaled down to at most this width (px)"
    )
    max_clients: int = Field(
        8, ge=1, le=64, description="most requests served at once (live pictures and event streams count)"
    )
    allow: list[str] = Field(
        ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7", "fe80::/10"],
        max_length=64,
        description="networks (CIDR) whose clients may connect when web.listen is not loopback; loopback "
        "always may. The server refuses the others, and `maskgate sandbox` writes the same into the unit",
    )
    kiosk_mirror: bool = Field(False, description="the kiosk screen shows the live picture, mirrored")
    language: Literal["en", "de"] = Field("en", description="language of the kiosk's texts: 'en' or 'de'")

    @field_validator("listen")
    @classmethod
    def _listen_form(cls, value: str) -> str:
        split_listen(value)
        return value.strip()

    @field_validator("allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        out = []
        for item in value:
            try:
                out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{item!r} is not a network: expected CIDR, e.g. 192.168.1.0/24") from None
        return out

    @model_validator(mode="after")
    def _token_off_loopback(self) -> WebConfig:
        # checked here, not by a length bound on the field, so that no error message echoes the token
        if self.token is not None and len(self.token.get_secret_value().strip()) < 16:
            raise ValueError("web.token needs at least 16 characters")
        host, _ = split_listen(self.listen)
        if not is_loopback(host) and self.token is None and self.token_file is None:
            raise ValueError(
                f"web.listen {self.listen} is not a loopback address: set web.token or web.token_file"
            )
        return self


def _topic_form(value: str) -> str:
    """An MQTT topic name to publish under: no wildcards, no empty level, not a broker's $ topic."""
    value = value.strip()
    if not value or value.startswith(("/", "$")) or value.endswith("/") or "//" in value:
        raise ValueError("expected topic levels joined by '/', e.g. maskgate/front-door")
    if any(c in value for c in "+#\0"):
        raise ValueError("a topic to publish to cannot hold '+', '#' or NUL")
    return value


class MqttConfig(Section):
    enabled: bool = Field(False, description="publish state, decisions and statistics to an MQTT broker")
    host: str = Field(
        "localhost", min_length=1, max_length=253, description="the broker's host name or address"
    )
    port: int = Field(1883, ge=1, le=65535, description="the broker's port (1883; 8883 is usual for TLS)")
    tls: bool = Field(False, description="connect with TLS, the broker's certificate checked")
    tls_ca_file: Path | None = Field(
        None,
        description="CA certificate(s) (PEM) the broker's certificate must chain to (default: the system's)",
    )
    tls_cert_file: Path | None = Field(
        None, description="client certificate (PEM), for brokers that ask for one"
    )
    tls_key_file: Path | None = Field(
        None, description="the client certificate's private key (PEM), readable by the service user alone"
    )
    username: str | None = Field(None, min_length=1, max_length=256, description="user name to log in with")
    password_file: Path | None = Field(
        None, description="file holding the password, readable by the service user alone (mode 0600)"
    )
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="client id, unique per broker (default: maskgate-<gate name>)",
    )
    topic_prefix: str | None = Field(
        None, max_length=200, description="topics go under this (default: maskgate/<gate name>)"
    )
    discovery: bool = Field(True, description="publish Home Assistant discovery configs (retained)")
    discovery_prefix: str = Field(
        "homeassistant", max_length=200, description="Home Assistant's discovery prefix"
    )
    qos: int = Field(
        1, ge=0, le=2, description="QoS of every message: 0 at most once, 1 at least once, 2 once"
    )
    keepalive_s: int = Field(
        30,
        ge=5,
        le=3600,
        description="keep-alive: the broker publishes 'offline' after 1.5 times this of silence",
    )
    queue_size: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="decisions held while the broker is away; beyond it the oldest are dropped",
    )
    stats_every_s: float = Field(60.0, ge=1, le=86_400, description="interval of the <prefix>/stats message")
    reconnect_initial_s: float = Field(
        1.0, gt=0, le=60, description="first wait before reconnecting to the broker"
    )
    reconnect_max_s: float = Field(10.0, gt=0, le=600, description="longest wait between reconnect attempts")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        return None if value is None else _topic_form(value)

    @field_validator("discovery_prefix")
    @classmethod
    def _discovery(cls, value: str) -> str:
        return _topic_form(value)

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be at least reconnect_initial_s")
        files = [k for k in ("tls_ca_file", "tls_cert_file", "tls_key_file") if getattr(self, k) is not None]
        if files and not self.tls:
            raise ValueError(f"{files[0]} is set but tls is false: set tls = true (or drop {files[0]})")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file is set without a username")
        return self


class GateConfig(Section):
    """Everything ``maskgate run`` needs; ``detect`` uses its source, detector and classifier."""

    source: SourceConfig = SourceConfig()
    detector: DetectorConfig = DetectorConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    decision: DecisionConfig = DecisionConfig()
    outputs: OutputsConfig = OutputsConfig()
    service: ServiceConfig = ServiceConfig()
    web: WebConfig = WebConfig()
    mqtt: MqttConfig = MqttConfig()

    @model_validator(mode="after")
    def _backend_defaults(self) -> GateConfig:
        """Fill ``decision.min_detection_score`` from the detector backend when it is not set."""
        if self.decision.min_detection_score is None:
            score = GATE_MIN_SCORE[self.detector.backend]
            # frozen: the one place a default depends on another section is settled here, at validation
            object.__setattr__(
                self, "decision", self.decision.model_copy(update={"min_detection_score": score})
            )
        return self


def build(data: dict[str, Any], origin: str = "configuration") -> GateConfig:
    """Validate a nested dict; every problem is named by its key path, all on one line."""
    try:
        return GateConfig.model_validate(data)
    except ValidationError as e:
        problems = error_lines(e, GateConfig)
        error = ConfigError(f"{origin}: " + "; ".join(problems))
        error.problems = [f"{origin}: {p}" for p in problems]
        raise error from None


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config {path} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config {path} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config {path} is not valid TOML: {e}") from None


def resolve_path(explicit: Path | None, *, system_default: bool = True) -> Path | None:
    """The file to read: the one named, else $MASKGATE_CONFIG, else the system one if it exists."""
    if explicit is not None:
        return Path(explicit)
    if not system_default:
        return None
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    return DEFAULT_PATH if DEFAULT_PATH.is_file() else None


def set_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Apply a command-line override such as ``detector.confidence`` = ``0.6`` to raw config data."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
        node = child
    node[leaf] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``key.path=value``, the value read as TOML (``0.6``, ``true``, ``[640, 480]``), else as a string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. detector.confidence=0.6")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def load(
    path: Path | None = None, overrides: list[tuple[str, Any]] = (), *, system_default: bool = True
) -> tuple[GateConfig, str]:
    """The validated configuration and where it came from (a file, or the built-in defaults).

    ``system_default=False`` reads only an explicitly named file: batch commands
    on a gate should not silently pick up the gate's own settings.
    """
    resolved = resolve_path(path, system_default=system_default)
    data = read_toml(resolved) if resolved is not None else {}
    for key, value in overrides:
        set_key(data, key, value)
    origin = f"config {resolved}" if resolved is not None else "configuration"
    return build(data, origin), (str(resolved) if resolved is not None else "built-in defaults")


def model_problems(cfg: GateConfig) -> list[str]:
    """What is wrong with the model files a valid configuration names, without starting anything:
    each bundle loaded and verified as the gate would, the SSD's Caffe files looked up verified in
    the fetch cache. ``--validate-config`` reports these with the configuration's own problems."""
    from ..core import fetch
    from ..core.bundle import default_bundle_path, load_bundle
    from ..core.errors import MaskgateError

    checks = [("classifier.bundle", cfg.classifier.bundle or default_bundle_path("classifier"), "classifier")]
    d = cfg.detector
    networks = {"ssd-int8": ("ssd", "detector"), "retinaface-int8": ("retinaface", "retinaface")}
    if d.backend in networks:
        checks.append(
            ("detector.bundle", d.bundle or default_bundle_path(networks[d.backend][1]), "detector")
        )
    elif d.backend == "unet":
        checks.append(("detector.segmenter_bundle", d.segmenter_bundle or default_bundle_path("segmenter"),
                       "segmenter"))  # fmt: skip
    problems = []
    for key, path, kind in checks:
        try:
            bundle = load_bundle(path, kind=kind)
        except MaskgateError as e:
            problems.append(f"{key}: {e}")
            continue
        want = networks.get(d.backend, (None,))[0] if key == "detector.bundle" else None
        if want and bundle.metadata.network != want:
            problems.append(
                f"{key}: {path} holds the {bundle.metadata.network} network; {d.backend} needs {want}"
            )
    if d.backend == "ssd-opencv":
        from ..detectors.ssd import SSD_PROTOTXT, SSD_WEIGHTS

        manifest = fetch.load_manifest()
        for name in (SSD_PROTOTXT, SSD_WEIGHTS):
            if not fetch.is_cached(manifest[name]):
                problems.append(f"detector.backend: ssd-opencv needs {name}, not in the cache verified; "
                                "run `maskgate models fetch --for edge --detector ssd-opencv`")  # fmt: skip
    return problems
