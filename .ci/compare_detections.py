"""Compare two runs of `maskgate detect` (and, optionally, of the demo) on the same images.

Used by .ci/check-arm64 to hold the emulated arm64 stack to the x86-64 one: every image in both,
the same number of faces, each face with the same label and box, and scores that differ by at
most --tolerance (the int8 kernels of LiteRT and OpenCV's resizing may differ by an ulp between
NEON and AVX code paths, which can move a dequantised score by a step). The demo's decision lines
(unlock, deny, cancel, relock, clear) must name the same faces at the same frames. Prints what it
found and, last, one line with the verdict; exits 0 only when everything agrees.

Standard library only: it runs with any Python 3.11.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# a decision line, after the time and level that lines carry off the journal ("2026-12-01 14:52:08.466 INFO ")
DECISION = re.compile(r"^(?:\S+ \S+ [A-Z]+ )?((?:unlock|deny|cancel|relock|clear) face\(s\) .*)$")
P_MASKED = re.compile(r"p\(masked\)=([0-9.]+)")


def load_jsonl(path: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            runs[str(record.get("image", record.get("frame")))] = record["faces"]
    return runs


def iou(a: list[float], b: list[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def compare_faces(ref: list[dict], other: list[dict]) -> tuple[list[str], float, float, int]:
    """Problems, the largest score and box differences, and how many paired faces differ in label."""
    problems: list[str] = []
    if len(ref) != len(other):
        problems.append(f"{len(ref)} faces against {len(other)}")
    unused = list(range(len(other)))
    score_diff = box_diff = 0.0
    relabelled = 0
    for face in ref:
        if not unused:
            break
        j = max(unused, key=lambda k: iou(face["box"], other[k]["box"]))
        unused.remove(j)
        twin = other[j]
        if twin["label"] != face["label"]:
            relabelled += 1
            problems.append(f"face at {face['box']}: {face['label']} against {twin['label']}")
        box_diff = max(box_diff, max(abs(p - q) for p, q in zip(face["box"], twin["box"], strict=True)))
        for key in ("score", "detection_score"):
            if key in face:
                score_diff = max(score_diff, abs(face[key] - twin[key]))
    return problems, score_diff, box_diff, relabelled


def decisions(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [m.group(1).strip() for line in lines if (m := DECISION.match(line.strip()))]


def compare_decisions(ref: list[str], other: list[str], tolerance: float) -> list[str]:
    problems = []
    if len(ref) != len(other):
        problems.append(f"{len(ref)} decisions against {len(other)}")
    for a, b in zip(ref, other, strict=False):
        pa, pb = P_MASKED.findall(a), P_MASKED.findall(b)
        # p(masked) is printed with two decimals: allow the tolerance plus the rounding of each side
        close = (abs(float(x) - float(y)) <= tolerance + 0.01 for x, y in zip(pa, pb, strict=False))
        same_p = len(pa) == len(pb) and all(close)
        if P_MASKED.sub("p", a) != P_MASKED.sub("p", b) or not same_p:
            problems.append(f"decision {a!r} against {b!r}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path, help="detect's JSONL of the reference run (x86-64)")
    parser.add_argument("other", type=Path, help="detect's JSONL of the run to check (arm64)")
    parser.add_argument("--tolerance", type=float, default=0.01, help="largest score difference allowed")
    parser.add_argument("--box-tolerance", type=float, default=0.0, help="largest box difference, px")
    parser.add_argument("--demo", nargs=2, type=Path, metavar=("REF_LOG", "OTHER_LOG"),
                        help="the demo's logs of both runs: their decision lines must agree")  # fmt: skip
    parser.add_argument("--names", default="arm64,x86-64", help="what to call the runs: OTHER,REFERENCE")
    args = parser.parse_args(argv)
    other_name, ref_name = args.names.split(",")

    ref, other = load_jsonl(args.reference), load_jsonl(args.other)
    problems = [f"{name}: only in {ref_name}" for name in ref if name not in other]
    problems += [f"{name}: only in {other_name}" for name in other if name not in ref]
    score_diff = box_diff = 0.0
    relabelled = 0
    for name in sorted(set(ref) & set(other)):
        found, s, b, n = compare_faces(ref[name], other[name])
        problems += [f"{name}: {p}" for p in found]
        score_diff, box_diff, relabelled = max(score_diff, s), max(box_diff, b), relabelled + n
    faces = sum(len(f) for f in ref.values())
    if box_diff > args.box_tolerance:
        problems.append(f"boxes differ by up to {box_diff:g} px (tolerance {args.box_tolerance:g})")
    if score_diff > args.tolerance:
        problems.append(f"scores differ by up to {score_diff:.4f} (tolerance {args.tolerance:g})")
    summary = (
        f"{len(ref)} images, {faces} faces: labels {f'differ ({relabelled})' if relabelled else 'same'}, "
        f"boxes within {box_diff:g} px, scores within {score_diff:.4f} (tolerance {args.tolerance:g})"
    )
    if args.demo:
        ref_log, other_log = (decisions(p) for p in args.demo)
        found = compare_decisions(ref_log, other_log, args.tolerance)
        problems += [f"demo: {p}" for p in found]
        if not ref_log:
            problems.append(f"demo: no decision in {args.demo[0]}")
        summary += f"; demo: {len(ref_log)} decisions, {'differ' if found else 'same'}"
    for p in problems:
        print(f"  {p}")
    verdict = "FAIL" if problems else "OK"
    print(f"{other_name} against {ref_name}: {summary}: {verdict}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
