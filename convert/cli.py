"""``maskgate convert classifier|detector|retinaface|segmenter``, registered with the edge CLI."""

from __future__ import annotations

import argparse

from maskgate.edge.cli.options import add_config_command, set_default_target

from .config import ConvertConfig, DetectorConvertConfig, RetinaFaceConvertConfig, SegmenterConvertConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="quantise a model to a verified int8 bundle: classifier, detector, retinaface or segmenter",
        description="Convert a model to full-integer int8 TFLite, verify it against its float original "
        "and write a model bundle; refuse if int8 loses too much. 'maskgate convert --model RUN ...' "
        "is short for 'maskgate convert classifier --model RUN ...'.",
    )
    targets = p.add_subparsers(
        dest="convert_target", required=True, metavar="{classifier,detector,retinaface,segmenter}"
    )
    set_default_target("convert", "classifier")
    add_config_command(
        targets, "classifier", ConvertConfig, handler=_convert,
        help="a training run's classifier as a verified int8 bundle",
        description="Convert a training run to full-integer int8 TFLite, verify it against the float "
        "model on the run's test split, and write a model bundle; refuse if int8 loses too much accuracy.",
    )  # fmt: skip
    add_config_command(
        targets, "detector", DetectorConvertConfig, handler=_convert_detector,
        help="OpenCV's SSD face detector as a verified int8 LiteRT bundle",
        description="Rebuild OpenCV's ResNet-10 SSD with its published weights, convert it to full-integer "
        "int8 with a dynamic input size, verify it against OpenCV's float detector on held-out scene images, "
        "and write a detector bundle; refuse if it finds too few of OpenCV's faces.",
    )  # fmt: skip
    add_config_command(
        targets, "retinaface", RetinaFaceConvertConfig, handler=_convert_retinaface,
        help="RetinaFace-MobileNet0.25 (faces and landmarks) as a verified int8 LiteRT bundle",
        description="Rebuild RetinaFace-MobileNet0.25 in Keras from its fetched ONNX weights, check it "
        "against onnxruntime, convert it to full-integer int8 with a dynamic input size calibrated on "
        "scenes of the tune side of the scene split, verify it against its float32 model on held-out tune "
        "scenes, and write a detector bundle (backend retinaface-int8); refuse if int8 finds too few of "
        "float's faces.",
    )  # fmt: skip
    add_config_command(
        targets, "segmenter", SegmenterConvertConfig, handler=_convert_segmenter,
        help="a train-unet run as a verified int8 segmenter bundle (detector backend 'unet')",
        description="Convert a U-Net face segmenter run to full-integer int8 calibrated on its training "
        "scenes, verify it against the Keras float model on its held-out test scenes (Dice against the float "
        "masks and against the true masks), and write a segmenter bundle; refuse if int8 loses too much "
        "Dice.",
    )  # fmt: skip


def _convert(cfg: ConvertConfig, args: argparse.Namespace) -> int:
    from .run import convert

    convert(cfg)
    return 0


def _convert_detector(cfg: DetectorConvertConfig, args: argparse.Namespace) -> int:
    from .detector import convert_detector

    convert_detector(cfg)
    return 0


def _convert_retinaface(cfg: RetinaFaceConvertConfig, args: argparse.Namespace) -> int:
    from .retinaface_bundle import convert_retinaface

    convert_retinaface(cfg)
    return 0


def _convert_segmenter(cfg: SegmenterConvertConfig, args: argparse.Namespace) -> int:
    from .segmenter import convert_segmenter

    convert_segmenter(cfg)
    return 0
