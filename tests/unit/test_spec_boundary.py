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
from detector.lake import schema

PACKAGE = Path(__file__).resolve().parents[2] / "detector"
# Stable names of the product (CLI, metrics namespace) and the default slug, which settings
# must name: not a detection's vocabulary.
ALLOWED = ("ecr-upload-detector", "EcrUploadDetector", "ecr-upload-unknown-user")
# Words of AWS itself the engine uses in their own sense: the STS call the subscriber adapter
# makes (``AssumeRole``, its ``role_arn``), and CloudTrail's ``userIdentity.userName`` that
# ``records`` reads from a raw record.
ALLOWED_WORDS = frozenset({"AssumeRole", "role_arn", "userName"})


# Plain words a detection may use for a column or request key that the engine uses in their
# ordinary sense ("name", "group", "policy"), and the engine's own columns.
COMMON = frozenset(schema.GENERIC.names) | {"*"}


def _distinctive(word: str) -> bool:
    """A word only a detection would use: an API name, a camelCase key, a snake_case column,
    a service endpoint; not a plain lowercase word such as "bucket" or "trail"."""
    return word not in COMMON and (word != word.lower() or "_" in word or "." in word)


def _vocabulary() -> set[str]:
    words: set[str] = {"AwsEcr", "ecr.amazonaws.com"}
    for d in detections.registry().values():
        # The image-push detections were the engine's first: all their words are checked.
        everything = "PutImage" in d.operations
        mine = set(d.operations)
        for f in d.request_fields:
            mine.update((f.column, f.key))
        for s in d.samples:
            mine.update((s.name, s.column, s.succeeded_key))
        if d.asff is not None:
            mine.update((d.asff.api, d.asff.service, *d.asff.types))
        words.update(w for w in mine if w not in COMMON and (everything or _distinctive(w)))
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
        w
        for w in _vocabulary() - ALLOWED_WORDS
        if re.search(r"(?<![A-Za-z0-9_])" + re.escape(w), text)
    )
    assert not found, f"{path.name} names {found}: declare it in a detection spec instead"
