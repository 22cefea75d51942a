"""The wheel a Pi installs holds every module and every shipped bundle file, and builds without
setuptools' "Package would be ignored" warnings: every folder of data is declared as such."""

from __future__ import annotations

import zipfile

from conftest import REPO

# Source folder -> the package it becomes, as [tool.setuptools.package-dir] maps them.
PACKAGE_DIRS = {"edge": "maskgate/edge", "train": "maskgate/train", "convert": "maskgate/convert"}


def test_the_build_warns_of_no_undeclared_package(wheel):
    assert "Package would be ignored" not in wheel.log
    assert "is absent from the `packages` configuration" not in wheel.log


def test_the_wheel_holds_every_module_and_bundle_file(wheel):
    names = set(zipfile.ZipFile(wheel.path).namelist())
    expected = {"maskgate/models/__init__.py", "maskgate/models/manifest.toml"}
    for folder, package in PACKAGE_DIRS.items():
        root = REPO / folder
        expected |= {f"{package}/{p.relative_to(root).as_posix()}" for p in root.rglob("*.py")}
    # the web server's pages, shipped as package data: no CDN, no build step
    static = REPO / "edge" / "web" / "static"
    pages = {p.name for p in static.iterdir() if p.is_file() and p.suffix != ".py"}
    assert {
        "index.html",
        "kiosk.html",
        "index.js",
        "kiosk.js",
        "index.css",
        "kiosk.css",
        "strings.json",
    } <= pages
    expected |= {f"maskgate/edge/web/static/{name}" for name in pages}
    bundles = [d for d in (REPO / "models").iterdir() if (d / "SHA256SUMS").is_file()]
    assert {d.name for d in bundles} >= {"classifier", "detector", "retinaface", "segmenter"}
    for d in bundles:
        expected |= {f"maskgate/models/{d.name}/{p.name}" for p in d.iterdir() if p.is_file()}
    assert sorted(expected - names) == []
