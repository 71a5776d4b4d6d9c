"""Detections are specs: no module outside ``detector/detections/`` names what a spec declares.

The forbidden words are taken from the specs themselves (operations, request keys and columns,
sample names, ASFF API, service and types), so a third detection extends the check by being
added. A module that needed one of them would mean the engine is not generic any more.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from detector import detections

PACKAGE = Path(__file__).resolve().parents[2] / "detector"
# Stable names of the product (CLI, metrics namespace) and the default slug, which settings
# must name: not a detection's vocabulary.
ALLOWED = ("ecr-upload-detector", "EcrUploadDetector", "ecr-upload-unknown-user")


def _vocabulary() -> set[str]:
    words: set[str] = {"AwsEcr", "ecr.amazonaws.com"}
    for d in detections.registry().values():
        words.update(d.operations)
        for f in d.request_fields:
            words.update((f.column, f.key))
        for s in d.samples:
            words.update((s.name, s.column, s.succeeded_key))
        if d.asff is not None:
            words.update((d.asff.api, d.asff.service, *d.asff.types))
    return words


def _engine_modules() -> list[Path]:
    return sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if "detections" not in p.relative_to(PACKAGE).parts and p.name != "detection.py"
    )


def test_the_vocabulary_is_real() -> None:
    words = _vocabulary()
    assert {"PutImage", "repositoryName", "imageTag", "repositories", "image_tags"} <= words
    assert len(_engine_modules()) > 20


@pytest.mark.parametrize("path", _engine_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_engine_module_names_no_detection_vocabulary(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for allowed in ALLOWED:
        text = text.replace(allowed, "")
    found = sorted(
        w for w in _vocabulary() if re.search(r"(?<![A-Za-z0-9_])" + re.escape(w), text)
    )
    assert not found, f"{path.name} names {found}: declare it in a detection spec instead"
