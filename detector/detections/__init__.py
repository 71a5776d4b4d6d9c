"""The detections this package ships: one module each, found by looking, not by a list.

Every module here that defines ``DETECTION`` (a ``detector.core.spec.Detection``) is a detection;
modules starting with ``_`` hold what several share. ``DEFAULT`` is what runs when nothing is
chosen: the unknown-user detection, as before detections were specs.

A choice (``DETECTIONS``, ``--detection``) names slugs, ``all``, or ESCU types (``ttp``,
``anomaly``, ``hunting``), mixed and comma-separated. In the Lambda, ``all`` and ``anomaly``/
``ttp`` leave Hunting detections out (they are for a person to look through, not to page
anyone); a Hunting detection runs there only when named by its slug or by ``hunting``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from detector.core.errors import ConfigError
from detector.core.spec import Active, Detection

DEFAULT = "ecr-upload-unknown-user"


@cache
def registry() -> dict[str, Detection]:
    """slug -> detection, in slug order (the default first)."""
    found: dict[str, Detection] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        detection = getattr(module, "DETECTION", None)
        if not isinstance(detection, Detection):
            continue
        for other in found.values():
            if detection.slug == other.slug or detection.id == other.id:
                raise RuntimeError(f"{info.name}: slug or id of {other.slug} used again")
        found[detection.slug] = detection
    return dict(sorted(found.items(), key=lambda kv: (kv[0] != DEFAULT, kv[0])))


def get(slug: str) -> Detection:
    try:
        return registry()[slug]
    except KeyError:
        known = ", ".join(registry())
        raise ConfigError(f"unknown detection {slug[:80]!r} (known: {known})") from None


# Words that choose several detections at once, and the ESCU type each stands for (None: all).
GROUPS: dict[str, str | None] = {
    "all": None,
    "ttp": "TTP",
    "anomaly": "Anomaly",
    "hunting": "Hunting",
}


def parse_slugs(
    text: str, source: str = "DETECTIONS", *, in_lambda: bool = False
) -> tuple[str, ...]:
    """``a,b`` -> ("a", "b"): known slugs (or groups), each once, in the order given; empty ->
    default."""
    slugs = [s.strip() for s in text.split(",") if s.strip()]
    return choose(slugs or [DEFAULT], source, in_lambda=in_lambda)


def choose(
    slugs: Iterable[str], source: str = "--detection", *, in_lambda: bool = False
) -> tuple[str, ...]:
    """The slugs chosen by ``slugs`` (slugs and ``GROUPS`` words, each kept once, in the order
    given; a group in registry order). ``in_lambda``: ``all`` and a type other than Hunting
    leave Hunting detections out."""
    out: list[str] = []
    for name in slugs:
        word = name.strip().lower()
        if word in GROUPS:
            kind = GROUPS[word]
            for slug, detection in registry().items():
                if kind is not None and detection.escu_type != kind:
                    continue
                if in_lambda and kind != "Hunting" and not detection.in_lambda_by_default:
                    continue
                if slug not in out:
                    out.append(slug)
            continue
        try:
            get(name)
        except ConfigError as exc:
            words = ", ".join(GROUPS)
            raise ConfigError(f"{source}: {exc}; or one of {words}") from None
        if name not in out:
            out.append(name)
    return tuple(out) or (DEFAULT,)


def activate(slugs: Iterable[str], env: Mapping[str, str] | None = None) -> tuple[Active, ...]:
    """The detections ``slugs`` with their options parsed from ``env`` (defaults if unset).

    A bad value is a ``ConfigError`` naming the variable and the detection.
    """
    env = env or {}
    active = []
    for slug in slugs:
        detection = get(slug)
        options: dict[str, Any] = {}
        for opt in detection.options:
            raw = env.get(opt.env)
            text = opt.default if raw is None or not raw.strip() else raw
            try:
                options[opt.env] = opt.parse(text)
            except ValueError as exc:
                raise ConfigError(f"{opt.env} ({slug}): {exc}") from None
        if detection.check_options is not None:
            try:
                detection.check_options(options)
            except ValueError as exc:
                names = ", ".join(o.env for o in detection.options)
                raise ConfigError(f"{names} ({slug}): {exc}") from None
        active.append(Active(detection, options))
    return tuple(active)


def default() -> tuple[Active, ...]:
    return activate([DEFAULT])
