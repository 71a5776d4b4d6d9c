"""The default detection's metadata, for code written before detections were specs.

Detections live in ``detector/detections/``; this name stays so imports keep working.
"""

from __future__ import annotations

from detector.core.spec import Detection, Observable
from detector.detections.ecr_upload_unknown_user import DETECTION

__all__ = ["DETECTION", "Detection", "Observable"]
