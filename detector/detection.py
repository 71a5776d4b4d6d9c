"""The default detection's metadata, for code written before detections were specs.

Detections live in ``detector/detections/``; this name stays so imports keep working.
"""

from __future__ import annotations

from detector.detections.ecr_upload_unknown_user import DETECTION
from detector.spec import Detection, Observable

__all__ = ["DETECTION", "Detection", "Observable"]
