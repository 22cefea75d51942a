"""``--help`` is light and honest: no heavy library loaded, real defaults, required flags marked.

A Pi runs ``maskgate outputs off`` from systemd's ExecStopPost and a user types ``--help`` to
learn the tool: neither may wait for numpy, OpenCV, LiteRT or TensorFlow to load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import REPO

HEAVY = ("numpy", "cv2", "PIL", "ai_edge_litert", "tflite_runtime", "tensorflow", "keras", "gpiozero")


def _every_help() -> dict[str, object]:
    """Each command's help text, and the heavy modules loaded after printing all of them."""
    code = textwrap.dedent(f"""
        import contextlib, io, json, sys
        from maskgate.edge.cli import build_parser, main

        def commands(parser, prefix=()):
            for action in parser._actions:
                if action.__class__.__name__ == "_SubParsersAction":
                    for name, sub in action.choices.items():
                        yield from commands(sub, (*prefix, name))
            yield prefix

        texts = {{}}
        for words in sorted(set(commands(build_parser()))):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                try:
                    main([*words, "--help"])
                except SystemExit:
                    pass
            texts[" ".join(words)] = out.getvalue()
        loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)
        print(json.dumps({{"texts": texts, "loaded": loaded}}))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_help_of_every_command_loads_no_heavy_library_and_shows_real_defaults():
    result = _every_help()
    texts = result["texts"]
    # the tree is walked, so a new command is checked without touching this test
    assert {"", "run", "detect", "bench", "crop-faces", "outputs off", "convert classifier", "train"} <= set(
        texts
    )
    assert result["loaded"] == []
    for command, text in texts.items():
        assert text.startswith("usage: maskgate"), command
        for junk in ("PydanticUndefined", "[(", "default: None", "default: True", "default: False"):
            assert junk not in text, (command, junk)


def test_required_flags_are_marked_required():
    texts = _every_help()["texts"]
    usage = " ".join(texts["train"].split("\n\n")[0].split())
    assert "--data PATH --out PATH" in usage and "[--data" not in usage
    assert "\nrequired:\n" in texts["train"] and "\nrequired:\n" in texts["convert detector"]
    assert "(default: 300x300,640x480)" in " ".join(texts["bench"].split())
    assert "--sizes WxH[,WxH...]" in texts["bench"] and "--threads N[,N...]" in texts["bench"]


def test_a_malformed_list_says_which_form_is_expected(capsys):
    from maskgate.edge.cli import main

    assert main(["bench", "--sizes", "300"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["maskgate: error: --sizes: expected sizes as WIDTHxHEIGHT[,WIDTHxHEIGHT...], e.g. "
                   "300x300,640x480 (got '300')"]  # fmt: skip
