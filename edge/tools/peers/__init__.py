"""Other projects' published mask detectors, run as they publish them, to measure maskgate against.

A peer is a reference, never a gate detector: nothing in the detector registry or the gate's
configuration can select one, and nothing on a device needs its files (they are optional manifest
entries, fetched with ``maskgate models fetch --for bench``). ``maskgate bench --aizoo`` times one
beside maskgate's pipeline and ``maskgate detect --reference aizoo`` writes its faces as JSONL for
``maskgate score``.
"""

from __future__ import annotations

REFERENCES = ("aizoo",)  # the peers `maskgate detect --reference` and `maskgate bench` know
