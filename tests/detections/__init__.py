"""Tests of single detections (``detector/detections/``)."""
