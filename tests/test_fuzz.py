"""Property-based tests of the loaders that read what a user or a stranger hands the gate.

Whatever the input (a configuration, a resealed bundle's metadata, the bytes of an image), the
loader either accepts it or raises the one error its caller turns into one line (``ConfigError``,
``ModelFileError``, ``ImageReadError``): never another exception, which would be a traceback and
exit 1, and make systemd restart-loop a gate that can never start.
"""

from __future__ import annotations

import json
import shutil

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from maskgate.edge.core.bundle import default_bundle_path, load_bundle, write_checksums  # noqa: E402
from maskgate.edge.core.errors import ConfigError, ImageReadError, ModelFileError  # noqa: E402
from maskgate.edge.core.imageio import decode_image  # noqa: E402
from maskgate.edge.gate.config import GateConfig, build, parse_override  # noqa: E402

SECTIONS = {name: list(field.annotation.model_fields) for name, field in GateConfig.model_fields.items()}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@st.composite
def configs(draw):
    """Mostly real section and key names (so validation goes deep), some invented ones."""
    data = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "extra"]), max_size=4, unique=True)):
        keys = SECTIONS.get(section, ["x"]) + ["typo_key"]
        data[section] = {
            k: draw(values) for k in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True))
        }
    if draw(st.booleans()):
        data[draw(st.sampled_from(list(SECTIONS)))] = draw(scalars)  # a section that is not a table
    return data


@settings(max_examples=400, deadline=None)
@given(configs())
def test_any_configuration_is_accepted_or_one_config_error(data):
    try:
        build(data)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_override_is_parsed_or_one_config_error(text):
    try:
        key, _ = parse_override(text)
    except ConfigError:
        return
    assert key and "=" in text


def _paths(node, prefix=()):
    """Every path into a JSON document, so a mutation can hit any of its values."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


@pytest.fixture(scope="module")
def bundle_copies(tmp_path_factory):
    """One copy of each shipped bundle per kind, rewritten in place by each example."""
    root = tmp_path_factory.mktemp("bundles")
    made = {}
    for kind in ("classifier", "detector"):
        shutil.copytree(default_bundle_path(kind), root / kind)
        made[kind] = (root / kind, json.loads((root / kind / "metadata.json").read_text()))
    return made


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from(["classifier", "detector"]), data=st.data())
def test_any_resealed_metadata_is_accepted_or_one_model_file_error(bundle_copies, kind, data):
    folder, original = bundle_copies[kind]
    meta = json.loads(json.dumps(original))
    paths = list(_paths(meta))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        if not path:
            meta = data.draw(values)
            break
        node = meta
        for part in path[:-1]:
            node = node[part]
        if data.draw(st.booleans()) and isinstance(node, dict):
            node.pop(path[-1], None)
        else:
            node[path[-1]] = data.draw(values)
        paths = list(_paths(meta))
    (folder / "metadata.json").write_text(json.dumps(meta))
    write_checksums(folder)
    try:
        load_bundle(folder)
    except ModelFileError as e:
        assert "\n" not in str(e)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda head, tail: head + tail, st.sampled_from(
    [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"GIF89a", b"RIFF\0\0\0\0WEBPVP8 ", b"II*\0", b"MM\0*"]
), st.binary(max_size=200)))  # fmt: skip
def test_any_bytes_decode_or_are_one_image_read_error(data):
    try:
        image = decode_image(data, "fuzz.img")
    except ImageReadError as e:
        assert "fuzz.img" in str(e)
    else:
        assert image.ndim == 3 and image.shape[2] == 3


def test_the_properties_see_real_failures():
    """The strategies reach the error paths, not only the happy one."""
    with pytest.raises(ConfigError):
        build({"outputs": {"relay_pin": True}})
    with pytest.raises(ImageReadError):
        decode_image(b"BM" + b"\xff" * 60, "x")
