"""``maskgate bench``: how fast each stage is on this device, int8 against float, as figures.

Frames are read once from the source (the read and decode time of each is
the *capture* stage), then every measurement runs on the same frames:

- **detector** alone, per backend: ``retinaface-int8`` and its float32 model at their own input
  policy, ``ssd-int8`` (LiteRT) and ``ssd-opencv`` (cv2.dnn) per input size;
- **classifier** alone, per variant: one face per call, and all faces of a frame in one call;
- the **pipeline** per variant, stage by stage: capture, detect, preprocess, classify, decide, total.

Variants: ``int8`` (the shipped path: the gate's detector, retinaface-int8 by default, and the
int8 classifier), ``float32`` (that detector's float32 model, or OpenCV's float SSD, with the
bundle's float32 classifier, when the bundle has one) and two references: ``keras``
(the usual public path: OpenCV's float SSD at 300x300 and a Keras model's ``predict`` per
frame), which needs TensorFlow and ``--keras MODEL``, and ``aizoo`` (``--aizoo``: AIZOO's
single-stage mask detector, one pass through OpenCV's float DNN, ``tools.peers.aizoo``), whose
faces come with its own labels, so with ``--voc`` its pipeline gets the scenes metric itself.
edge/ never imports TensorFlow: the Keras variant is provided by train/ through the
``maskgate.bench`` entry point, and is skipped, with the reason, when that is not installed.
Every timing follows a warm-up.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np

from ..core import scene_split, sysinfo, timing
from ..core.bundle import default_bundle_path, load_bundle
from ..core.errors import ConfigError, DataError, MaskgateError
from ..core.geometry import crop, expand_box
from ..core.labels import MASKED, UNMASKED
from ..core.litert import runtime_name
from ..core.preprocess import prepare_face
from ..core.progress import Progress, track
from ..core.timing import summarize
from ..core.voc import annotation_files, parse_voc
from ..detectors.base import FaceDetector
from ..detectors.registry import make_detector
from ..detectors.retinaface import RetinaFaceDetector
from ..gate.analyzer import FrameAnalyzer
from ..gate.classifier import classifier_from_bundle
from ..gate.config import GateConfig, SourceConfig
from ..gate.decision import Gate
from ..gate.sources import open_source
from ..gate.tracking import Observation, Tracker
from .config import BenchConfig
from .peers.aizoo import WHAT as AIZOO_WHAT
from .peers.aizoo import AizooReference
from .scoring import Prediction, match_image, match_scored

logger = logging.getLogger(__name__)

SCHEMA = "maskgate-bench/1"
PLUGIN_GROUP = "maskgate.bench"
STAGES = ("capture", "detect", "preprocess", "classify", "decide", "total")


@dataclass
class Series:
    """Timings of one measured thing, one entry per frame (or face)."""

    ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    faces: list[int] = field(default_factory=list)

    def stats(self) -> dict[str, Any] | None:
        """Summary statistics, with the 1-minute load average as the measurement ended (it is taken
        right after each one: the load of the last minute is the load the figures were measured under)."""
        s = summarize(self.ms)
        if s is None:
            return None
        s["fps"] = 1000.0 / s["mean"] if s["mean"] > 0 else None
        s["load_1min"] = round(load_average(), 2)
        if self.cpu_ms:
            s["cpu_ms"] = float(np.mean(self.cpu_ms))
        if self.faces:
            s["faces_per_frame"] = float(np.mean(self.faces))
        return s


class Clock:
    """Wall and CPU time of a block, in milliseconds."""

    def __enter__(self) -> Clock:
        self.t, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.ms = (time.perf_counter() - self.t) * 1000
        self.cpu_ms = (time.process_time() - self.c) * 1000


def load_average() -> float:
    """The 1-minute load average (0 where the system does not report one)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def busy_measurements(result: dict[str, Any], cores: int) -> list[str]:
    """Measurements taken while more was running than the benchmark itself.

    The benchmark keeps ``threads`` cores busy; a load average above that plus one means
    something else competed for the CPU during the minute before the measurement ended.
    """
    busy = []
    for run in result["runs"]:
        limit = min(run["threads"], cores) + 1.0
        stats = {f"pipeline {k}": v["pipeline"]["total"] for k, v in run["variants"].items()}
        stats |= {f"detector {k}": v for k, v in run["detectors"].items()}
        for name, s in stats.items():
            if s and s.get("load_1min", 0.0) > limit:
                busy.append(f"{name} @ {run['threads']} thread(s) (load {s['load_1min']:.1f})")
    return busy


def rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_frames(cfg: BenchConfig) -> tuple[list[np.ndarray], list[str | None], Series]:
    """The frames to measure on, their file names (images), and what reading and decoding each cost."""
    source = open_source(SourceConfig(uri=cfg.source, pace=False, loop=True))
    frames, names, capture = [], [], Series()
    with source, Progress("read frames", cfg.frames, unit="frames") as bar:
        while len(frames) < cfg.frames:
            with Clock() as c:
                frame = source.read()
            if frame is None:
                break
            frames.append(frame.image)
            names.append(frame.name)
            capture.ms.append(c.ms)
            capture.cpu_ms.append(c.cpu_ms)
            bar.update()
    if not frames:
        raise DataError(f"source {cfg.source}: no readable frame")
    return frames, names, capture


def measure(fn: Callable[[Any], Any], items: Sequence[Any], cfg: BenchConfig, desc: str) -> Series:
    """``timing.measure`` with the run's warm-up, duration and a progress bar."""
    with Progress(desc, len(items), unit="items") as bar:
        wall, cpu = timing.measure(fn, items, warmup=cfg.warmup, duration=cfg.duration, done=bar.update)
    return Series(ms=wall, cpu_ms=cpu)


def face_boxes(frames: list[np.ndarray], detector: FaceDetector, margin: float) -> list[list[tuple]]:
    """Per frame, the grown boxes of the faces the detector finds, or a centre crop where it finds none,
    so every frame gives the classifier work of a realistic size."""
    out = []
    for image in frames:
        h, w = image.shape[:2]
        boxes = [expand_box(d.box, margin, w, h) for d in detector.detect(image)]
        out.append([b for b in boxes if b is not None] or [(w // 4, h // 4, 3 * w // 4, 3 * h // 4)])
    return out


def face_crops(frames: list[np.ndarray], boxes: list[list[tuple]], size: int) -> list[np.ndarray]:
    """Per frame, its faces as one N x size x size x 3 batch."""
    return [
        np.stack([prepare_face(crop(image, b), size) for b in bs])
        for image, bs in zip(frames, boxes, strict=True)
    ]


@dataclass
class Variant:
    """A detector and a classifier measured together, as the gate would run them.

    A ``one_pass`` variant (a peer whose one network finds and labels faces) has no classifier
    of its own to profile, and with ``--voc`` its pipeline's faces are scored as they come.
    """

    name: str
    analyzer: FrameAnalyzer | AizooReference
    load_s: float
    note: str = ""
    one_pass: bool = False


def keras_plugin() -> Callable[[Path], Any] | str:
    """The Keras reference classifier factory, or why it is unavailable."""
    found = [ep for ep in entry_points(group=PLUGIN_GROUP) if ep.name == "keras"]
    if not found:
        return "maskgate's train stage is not installed (pip install 'maskgate[train]')"
    try:
        return found[0].load()
    except ImportError as e:
        return f"TensorFlow is not installed ({e.name or e}); pip install 'maskgate[train]'"


def build_variants(
    cfg: BenchConfig, threads: int, gate_cfg: GateConfig
) -> tuple[list[Variant], dict[str, str]]:
    bundle = load_bundle(gate_cfg.classifier.bundle or default_bundle_path(), kind="classifier")
    margin = gate_cfg.detector.margin
    det_cfg = gate_cfg.detector.model_copy(update={"threads": threads})
    opencv_cfg = det_cfg.model_copy(update={"backend": "ssd-opencv", "bundle": None, "input_size": None})
    skipped: dict[str, str] = {}

    gate_filter = {
        "min_score": gate_cfg.decision.min_detection_score,
        "min_height": gate_cfg.decision.min_face_px,
    }

    def variant(name: str, note: str, detector, classifier_factory, keep=gate_filter) -> Variant:
        """``detector``: a [detector] section, or a function making the detector."""
        with Clock() as c:
            made = detector() if callable(detector) else make_detector(detector)
            analyzer = FrameAnalyzer(made, bundle, margin=margin, classifier=classifier_factory(), **keep)
        return Variant(name, analyzer, c.ms / 1000, note)

    int8_backend = det_cfg.backend if det_cfg.backend != "ssd-opencv" else "ssd-int8"
    variants = [
        variant(
            "int8",
            f"{int8_backend} + int8 classifier",
            det_cfg.model_copy(update={"backend": int8_backend}),
            lambda: classifier_from_bundle(bundle, num_threads=threads),
        )
    ]
    if bundle.float_model_path is None:
        skipped["float32"] = (
            f"bundle {bundle.path.name} has no float32 model (convert it without --no-float32)"
        )
    else:  # the gate's own detector in float32 where its bundle has one, else the published float SSD
        rf = det_cfg.backend == "retinaface-int8"
        variants.append(
            variant(
                "float32",
                ("retinaface float32" if rf else "ssd-opencv (float)") + " + float32 TFLite classifier",
                (lambda: RetinaFaceDetector.from_config(det_cfg, float_model=True)) if rf else opencv_cfg,
                lambda: classifier_from_bundle(bundle, num_threads=threads, float_model=True),
            )
        )
    if cfg.keras is None:
        skipped["keras"] = "no --keras model given"
    else:
        with Clock() as c:  # importing TensorFlow is part of what this variant costs to start
            factory = keras_plugin()
        if isinstance(factory, str):
            skipped["keras"] = factory
        else:
            # The public pipeline as published: SSD at 300x300 keeping faces from score 0.5, every
            # one of them classified by one model.predict call per frame, no size filter.
            keras = variant(
                "keras",
                "ssd-opencv 300x300, faces from score 0.5, Keras model.predict per frame",
                opencv_cfg.model_copy(update={"input_size": (300, 300), "confidence": 0.5}),
                lambda: factory(cfg.keras),
                keep={"min_score": 0.5, "min_height": 0},
            )
            keras.load_s += c.ms / 1000
            keras.note += f" (TensorFlow threads: {keras.analyzer.classifier.threads})"
            variants.append(keras)
    if not cfg.aizoo:
        skipped["aizoo"] = "not asked for (--aizoo)"
    else:
        try:
            with Clock() as c:
                peer = AizooReference.fetched(threads=threads)
        except MaskgateError as e:  # its files are optional: a device need not have them
            skipped["aizoo"] = str(e)
        else:
            variants.append(Variant("aizoo", peer, c.ms / 1000, f"{AIZOO_WHAT}, {threads} thread(s)", True))
    return variants, skipped


def pipeline(
    variant: Variant,
    frames: list[np.ndarray],
    capture: Series,
    cfg: BenchConfig,
    gate_cfg: GateConfig,
    found: list[list] | None = None,
) -> dict[str, Any]:
    """Stage by stage, the way ``maskgate run`` does it, on every frame; each frame's faces are
    appended to ``found`` when one is given."""
    d = gate_cfg.decision
    tracker = Tracker.from_config(d)
    gate = Gate(d)
    series = {s: Series() for s in STAGES if s != "capture"}
    for image in frames[: cfg.warmup]:
        variant.analyzer.analyze(image)
    deadline = time.monotonic() + cfg.duration if cfg.duration else None
    for i, image in enumerate(track(frames, f"pipeline {variant.name}", unit="frames")):
        with Clock() as total:
            analysis = variant.analyzer.analyze(image)
            with Clock() as decide:
                t = i / 15.0  # frames as a 15 fps camera would deliver them
                gate.step(
                    t, tracker.update(t, [Observation(f.box, f.masked, f.p_masked) for f in analysis.faces])
                )
        timings = analysis.timings
        for name, ms in (
            ("detect", timings.detect),
            ("preprocess", timings.preprocess),
            ("classify", timings.classify),
            ("decide", decide.ms),
            ("total", total.ms),
        ):
            series[name].ms.append(ms)
        series["total"].cpu_ms.append(total.cpu_ms)
        series["total"].faces.append(len(analysis.faces))
        if found is not None:
            found.append(analysis.faces)
        if deadline is not None and time.monotonic() > deadline:
            break
    # capture is measured once, when the frames are read: a camera-fed gate pays it on top of the rest
    return {"capture": capture.stats()} | {k: v.stats() for k, v in series.items()}


def classifier_profile(variant: Variant, batches: list[np.ndarray], cfg: BenchConfig) -> dict[str, Any]:
    """One face per invocation, and each frame's faces in one invocation (reported per face)."""
    predict = variant.analyzer.classifier.predict
    faces = [face[None] for batch in batches for face in batch]
    one = measure(predict, faces, cfg, f"classifier {variant.name}")
    batched = measure(predict, batches, cfg, f"classifier {variant.name} batched")
    per_face = Series(ms=[ms / len(b) for ms, b in zip(batched.ms, batches, strict=False)])
    return {
        "per_face": one.stats(),
        "batched_per_face": per_face.stats(),
        "batch_faces_mean": float(np.mean([len(b) for b in batches])),
    }


def detector_profile(
    frames: list[np.ndarray],
    names: list[str | None],
    cfg: BenchConfig,
    threads: int,
    gate_cfg: GateConfig,
    truth: dict[str, list] | None = None,
) -> dict[str, Any]:
    """Each backend at each input size on every frame; with ``--voc``, also what it finds.

    The faces each backend reports are classified by the int8 classifier and
    scored against the VOC boxes (the scenes metric), and ssd-int8's boxes are
    matched against ssd-opencv's at the same size (recall at IoU >= 0.5, from
    score 0.5 for both, and the correlation of matched scores).
    """
    if truth is None and cfg.voc is not None:
        truth = voc_truth(cfg.voc)
    bundle = load_bundle(gate_cfg.classifier.bundle or default_bundle_path(), kind="classifier")
    out: dict[str, Any] = {}
    found: dict[str, list] = {}

    def profile(key: str, analyzer: FrameAnalyzer) -> None:
        series, faces = Series(), []
        for image in frames[: cfg.warmup]:
            analyzer.detector.detect(image)
        deadline = time.monotonic() + cfg.duration if cfg.duration else None
        for image in track(frames, f"detector {key}", unit="frames"):
            analysis = analyzer.analyze(image)
            series.ms.append(analysis.timings.detect)
            faces.append(analysis.faces)
            if deadline is not None and time.monotonic() > deadline:
                break
        out[key] = series.stats()
        found[key] = faces
        if truth is not None:
            out[key]["scenes"] = scenes_metric(truth, names, faces, side=cfg.scenes)

    def analyzer_for(detector: FaceDetector) -> FrameAnalyzer:
        return FrameAnalyzer(detector, bundle, margin=gate_cfg.detector.margin, threads=threads)

    def config_for(backend: str):
        """The gate's [detector] section for ``backend``: its bundle and input size only if they are
        the gate's own backend's (another backend's bundle or input size would be refused)."""
        own = backend == gate_cfg.detector.backend
        keep = {} if own else {"bundle": None, "input_size": None}
        return gate_cfg.detector.model_copy(update={"backend": backend, "threads": threads} | keep)

    rf_int8 = make_detector(config_for("retinaface-int8"))
    rf_detectors = [rf_int8]
    if rf_int8.bundle.float_model_path is not None:
        rf_detectors.append(RetinaFaceDetector.from_config(config_for("retinaface-int8"), float_model=True))
    else:
        out["skipped"] = {"retinaface-float32": f"bundle {rf_int8.bundle.path.name} has no float32 model"}
    for detector in rf_detectors:
        analyzer = analyzer_for(detector)
        size = detector.input_size
        profile(f"{detector.name}@{size if size == 'frame' else 'x'.join(map(str, size))}", analyzer)
        analyzer.close()
    for backend in ("ssd-int8", "ssd-opencv"):
        analyzer = analyzer_for(make_detector(config_for(backend)))
        for w, h in cfg.sizes:
            analyzer.detector.input_size = (w, h)
            profile(f"{backend}@{w}x{h}", analyzer)
        analyzer.close()
    for w, h in cfg.sizes:
        int8, float_ = found[f"ssd-int8@{w}x{h}"], found[f"ssd-opencv@{w}x{h}"]
        n = min(len(int8), len(float_))  # under --duration the two may have seen different numbers of frames
        out[f"ssd-int8@{w}x{h}"]["vs_opencv"] = agreement(float_[:n], int8[:n], min_score=0.5)
    rf = [k for k in found if k.startswith("retinaface")]
    if len(rf) == 2:
        n = min(len(found[k]) for k in rf)
        out[rf[0]]["vs_float32"] = agreement(found[rf[1]][:n], found[rf[0]][:n], min_score=0.5)
    return out


def agreement(reference: list[list], candidate: list[list], *, min_score: float) -> dict[str, Any]:
    """How many of the reference detector's faces (from ``min_score``) the candidate finds at that score."""
    total = hit = 0
    pairs: list[tuple[float, float]] = []
    for ref, got in zip(reference, candidate, strict=True):
        n, k, p = match_scored(
            [(f.box, f.detection_score) for f in ref if f.detection_score >= min_score],
            [(f.box, f.detection_score) for f in got if f.detection_score >= min_score],
        )
        total, hit, pairs = total + n, hit + k, pairs + p
    a = np.asarray(pairs) if pairs else np.zeros((0, 2))
    return {
        "reference_faces": total,
        "found": hit,
        "recall": hit / total if total else None,
        "score_correlation": float(np.corrcoef(a[:, 0], a[:, 1])[0, 1]) if len(a) > 2 else None,
    }


def voc_truth(voc: Path) -> dict[str, list]:
    return dict(parse_voc(x) for x in annotation_files(voc))


def scenes_metric(
    truth: dict[str, list], names: list[str | None], faces: list[list], *, side: str | None = None
) -> dict[str, Any]:
    """The scenes benchmark (``maskgate score``) on the frames that have annotations, optionally only
    those on one side of the scene split."""
    from collections import Counter

    total: Counter = Counter()
    seen = set()
    for name, frame_faces in zip(names, faces, strict=False):  # under --duration, faces may be fewer
        if name in truth and name not in seen and (side is None or scene_split.side(name) == side):
            seen.add(name)  # a looping source repeats frames: count each image once
            total += match_image(
                truth[name], [Prediction(f.box, f.label) for f in frame_faces], iou=0.4, min_height=32
            )
    n = total["faces"]

    def ratio(a: str, b: str) -> float | None:
        return total[a] / total[b] if total[b] else None

    return {
        "images": len(seen),
        "side": side,
        "faces": n,
        "recall": ratio("found", "faces"),
        "recall_masked": ratio(f"found:{MASKED}", f"faces:{MASKED}"),
        "recall_unmasked": ratio(f"found:{UNMASKED}", f"faces:{UNMASKED}"),
        "accuracy_on_found": ratio("right", "found"),
        "end_to_end_accuracy": ratio("right", "faces"),
        "extra_boxes_per_image": total["extra"] / len(seen) if seen else None,
    }


def run_bench(cfg: BenchConfig, gate_cfg: GateConfig) -> dict[str, Any]:
    """Every measurement on the same frames, with the gate's detector, classifier and decision settings."""
    load_at_start = load_average()
    frames, names, capture = read_frames(cfg)
    truth = voc_truth(cfg.voc) if cfg.voc is not None else None
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "source": cfg.source,
        "machine": sysinfo.machine(),
        "libraries": sysinfo.library_versions() | {"runtime": runtime_name()},
        "settings": cfg.model_dump(mode="json", exclude={"json_out", "plot"}),
        "gate": gate_cfg.model_dump(mode="json", include={"detector", "classifier", "decision"}),
        "runs": [],
    }
    for threads in cfg.threads:
        import cv2

        cv2.setNumThreads(threads)
        variants, skipped = build_variants(cfg, threads, gate_cfg)
        run: dict[str, Any] = {"threads": threads, "variants": {}, "skipped": skipped}
        # every classifier sees the same faces: those the int8 detector finds
        boxes = face_boxes(frames, variants[0].analyzer.detector, gate_cfg.detector.margin)
        for v in variants:
            found: list[list] | None = [] if v.one_pass and truth is not None else None
            entry = run["variants"][v.name] = {
                "what": v.note,
                "load_s": round(v.load_s, 3),
                "pipeline": pipeline(v, frames, capture, cfg, gate_cfg, found),
            }
            if v.one_pass:  # no classifier of its own: its labels are scored with the faces
                if found is not None:
                    entry["scenes"] = scenes_metric(truth, names, found, side=cfg.scenes)
            else:
                batches = face_crops(frames, boxes, v.analyzer.classifier.input_size)
                entry["classifier"] = classifier_profile(v, batches, cfg)
        for v in variants:
            v.analyzer.close()
        run["detectors"] = detector_profile(frames, names, cfg, threads, gate_cfg, truth)
        run["skipped"] |= run["detectors"].pop("skipped", {})
        run["gate_detector"] = gate_detector_key(run["detectors"], gate_cfg)
        result["runs"].append(run)
    headline = max(result["runs"], key=lambda r: r["threads"])
    total = headline["variants"]["int8"]["pipeline"]["total"]
    result |= {
        "frames": len(frames),
        "threads": headline["threads"],
        "p50_ms": total["p50"],
        "p95_ms": total["p95"],
        "fps": total["fps"],
        "stages": headline["variants"]["int8"]["pipeline"],
        "variants": headline["variants"],
        "detectors": headline["detectors"],
        "skipped": headline["skipped"],
        "peak_rss_mb": round(rss_mb(), 1),
    }
    result["ratios"] = ratios(headline)
    busy = busy_measurements(result, os.cpu_count() or 1)
    result["load_average"] = {"at_start": round(load_at_start, 2), "busy": busy}
    notes = []
    if cfg.duration:
        notes.append("--duration ends each measurement on time, so variants may cover different frames")
    if busy:
        notes.append(f"the machine was busy during {len(busy)} measurement(s): {', '.join(busy)}")
        logger.warning(
            "the machine was busy during %d measurement(s) (load average above the threads measured "
            "plus one): %s; their figures are pessimistic, run again on an idle machine",
            len(busy),
            "; ".join(busy),
        )
    if notes:
        result["notes"] = notes
    return result


def gate_detector_key(detectors: dict[str, Any], gate_cfg: GateConfig) -> str | None:
    """Which of the detector measurements is the gate's own detector at its own input size (the
    faces ``maskgate detect`` reports), if one is."""
    backend = gate_cfg.detector.backend
    if backend == "retinaface-int8":
        return next((k for k in detectors if k.startswith("retinaface-int8@")), None)
    size = gate_cfg.detector.input_size or (300, 300)
    key = f"{backend}@{'x'.join(map(str, size)) if isinstance(size, tuple) else size}"
    return key if key in detectors else None


def ratios(run: dict[str, Any]) -> dict[str, float]:
    """How many times faster int8 is than the other variants, on the same frames; against a peer
    that labels its own faces, also how much more accurate end to end (a difference, not a ratio)."""
    v = run["variants"]
    out: dict[str, float] = {}
    if "aizoo" in v:
        out["pipeline_fps_int8_over_aizoo"] = (
            v["int8"]["pipeline"]["total"]["fps"] / v["aizoo"]["pipeline"]["total"]["fps"]
        )
        own = (run["detectors"].get(run.get("gate_detector") or "") or {}).get("scenes") or {}
        peer = v["aizoo"].get("scenes") or {}
        if own.get("end_to_end_accuracy") is not None and peer.get("end_to_end_accuracy") is not None:
            out["end_to_end_int8_minus_aizoo"] = own["end_to_end_accuracy"] - peer["end_to_end_accuracy"]
    for other in ("float32", "keras"):
        if other in v:
            out[f"pipeline_fps_int8_over_{other}"] = (
                v["int8"]["pipeline"]["total"]["fps"] / v[other]["pipeline"]["total"]["fps"]
            )
            out[f"classifier_per_face_{other}_over_int8"] = (
                v[other]["classifier"]["per_face"]["mean"] / v["int8"]["classifier"]["per_face"]["mean"]
            )
    d = run["detectors"]
    for key in d:
        if key.startswith("ssd-int8@"):
            size = key.split("@")[1]
            out[f"detector_{size}_opencv_over_int8"] = d[f"ssd-opencv@{size}"]["mean"] / d[key]["mean"]
    rf = next((k for k in d if k.startswith("retinaface-int8@")), None)
    if rf is not None:  # medians: one slow frame (a crowd, a big scene) should not decide the ratio
        for key in d:
            if key.startswith(("ssd-int8@", "retinaface-float32@")):
                out[f"detector_{key.replace('@', '_at_')}_over_{rf.split('@')[0]}"] = (
                    d[key]["p50"] / d[rf]["p50"]
                )
    return out


def _num(stats: dict[str, Any] | None, key: str, width: int, digits: int = 2) -> str:
    """A right-aligned figure, or n/a where a measurement had nothing to measure."""
    value = (stats or {}).get(key)
    return f"{value:{width}.{digits}f}" if value is not None else f"{'n/a':>{width}s}"


SCENE_COLUMNS = ("recall", "recall_masked", "recall_unmasked", "accuracy_on_found", "end_to_end_accuracy")


def _head_to_head(run: dict[str, Any]) -> list[str]:
    """maskgate's pipeline beside the references that label their own faces: speed and the scenes
    metric side by side (maskgate's faces: its detector's measurement, as ``maskgate detect`` runs it)."""
    peers = {k: v for k, v in run["variants"].items() if "classifier" not in v}
    if not peers:
        return []
    lines = [
        "",
        f"{'against peers (pipeline)':34s}{'p50':>10s}{'p95':>10s}{'fps':>8s}"
        + "".join(f"{c:>10s}" for c in ("recall", "on found", "e2e", "extra/img")),
    ]
    own = run["detectors"].get(run.get("gate_detector") or "") or {}
    rows = [("int8", run["variants"]["int8"], own.get("scenes"))]
    rows += [(name, v, v.get("scenes")) for name, v in peers.items()]
    for name, v, sc in rows:
        t = v["pipeline"]["total"]
        lines.append(
            f"{name:34s}"
            + _num(t, "p50", 10)
            + _num(t, "p95", 10)
            + _num(t, "fps", 8, 1)
            + (
                "".join(_num(sc, k, 10, 3) for k in ("recall", "accuracy_on_found", "end_to_end_accuracy"))
                + _num(sc, "extra_boxes_per_image", 10)
                if sc
                else ""
            )
        )
    if own.get("scenes"):
        lines.append(
            f"int8's faces: those of {run['gate_detector']} above, classified by the int8 classifier"
        )
    return lines


def format_table(result: dict[str, Any]) -> str:
    """The figures as a terminal table."""
    m = result["machine"]
    libs = result["libraries"]
    runtime = libs.get("runtime")
    lines = [
        f"maskgate bench: {result['frames']} frames from {result['source']}",
        f"{m['cpu']}, {m['cores']} cores, {m['os']}, Python {m['python']}, "
        f"{runtime} {result['libraries'].get(runtime, '')}, "
        f"OpenCV {libs.get('opencv-python-headless') or libs.get('opencv-python')}",
    ]
    for run in result["runs"]:
        lines += [
            "",
            f"== {run['threads']} thread(s)",
            "",
            f"{'pipeline (ms per frame)':34s}" + "".join(f"{s:>11s}" for s in STAGES) + f"{'fps':>8s}",
        ]
        for name, v in run["variants"].items():
            p = v["pipeline"]
            lines.append(
                f"{name + ' p50':34s}"
                + "".join(_num(p[s], "p50", 11) for s in STAGES)
                + _num(p["total"], "fps", 8, 1)
            )
            lines.append(f"{name + ' p95':34s}" + "".join(_num(p[s], "p95", 11) for s in STAGES))
        lines += ["", f"{'variant':34s}{'load s':>10s}{'CPU ms/frame':>14s}{'faces/frame':>13s}  what"]
        for name, v in run["variants"].items():
            t = v["pipeline"]["total"]
            lines.append(
                f"{name:34s}{v['load_s']:10.2f}"
                + _num(t, "cpu_ms", 14)
                + _num(t, "faces_per_frame", 13)
                + f"  {v['what']}"
            )
        lines += ["", f"{'classifier (ms per face)':34s}{'one face p50':>14s}{'batched p50':>14s}"]
        for name, v in run["variants"].items():
            c = v.get("classifier")
            if c is None:
                lines.append(f"{name:34s}{'one pass: no classifier of its own':>28s}")
                continue
            lines.append(
                f"{name:34s}" + _num(c["per_face"], "p50", 14) + _num(c["batched_per_face"], "p50", 14)
            )
        lines += [
            "",
            f"{'detector (ms per frame)':34s}{'p50':>10s}{'p95':>10s}{'vs ref':>9s}"
            + "".join(f"{c:>10s}" for c in ("recall", "masked", "unmasked", "on found", "e2e", "extra/img")),
        ]
        for name, d in run["detectors"].items():
            vs = (d.get("vs_opencv") or d.get("vs_float32") or {}).get("recall")
            sc = d.get("scenes") or {}
            lines.append(
                f"{name:34s}"
                + _num(d, "p50", 10)
                + _num(d, "p95", 10)
                + (f"{vs:9.4f}" if vs is not None else f"{'':9s}")
                + "".join(_num(sc, k, 10, 3) for k in SCENE_COLUMNS if sc)
                + (_num(sc, "extra_boxes_per_image", 10) if sc else "")
            )
        if any(d.get("scenes") for d in run["detectors"].values()):
            sides = {d["scenes"]["side"] for d in run["detectors"].values() if d.get("scenes")}
            lines.append(
                f"scenes: {', '.join(str(x or 'all') for x in sides)} side of the scene split; "
                "'vs ref': ssd-int8 against ssd-opencv, retinaface-int8 against its float32 model"
            )
        lines += _head_to_head(run)
        for name, why in run["skipped"].items():
            lines.append(f"skipped {name}: {why}")
    lines += [
        "",
        "ratios (same frames): "
        + ", ".join(
            f"{k} {v:+.3f}" if "_minus_" in k else f"{k} {v:.1f}x" for k, v in result["ratios"].items()
        ),
        f"peak RSS {result['peak_rss_mb']} MB",
        f"load average at start {result['load_average']['at_start']:.2f}; "
        + (
            f"busy during {len(result['load_average']['busy'])} measurement(s), see notes"
            if result["load_average"]["busy"]
            else "no measurement ran on a busy machine"
        ),
    ]
    lines += [f"note: {n}" for n in result.get("notes", [])]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Stacked latency per stage per variant, and detector time per backend and size."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError("--plot needs matplotlib: pip install 'maskgate[train]' or matplotlib") from e
    variants = result["variants"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = list(variants)
    bottom = np.zeros(len(names))
    for stage in ("detect", "preprocess", "classify", "decide"):
        values = np.array([variants[n]["pipeline"][stage]["p50"] for n in names])
        ax1.bar(names, values, bottom=bottom, label=stage)
        bottom += values
    ax1.set_ylabel("ms per frame (p50)")
    ax1.set_title(f"pipeline, {result['threads']} thread(s)")
    ax1.legend()
    det = result["detectors"]
    ax2.bar(
        list(det),
        [det[k]["p50"] for k in det],
        color=["tab:green" if "int8" in k else "tab:gray" for k in det],
    )
    ax2.set_ylabel("ms per frame (p50)")
    ax2.set_title("face detector alone")
    ax2.tick_params(axis="x", rotation=30)
    fig.suptitle(f"{result['machine']['cpu']}, {result['frames']} frames")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
