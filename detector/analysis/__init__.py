"""Findings: from the rows the reader keeps to what each detection reports.

The engine that runs the enabled detections over objects (``engine``), findings and their
aggregation (``findings``), their text and JSON forms (``output``), the same detections as one
Athena statement each (``athena_sql``), allowlist suggestions from findings (``suggest``), and
the runner of the specs' examples (``selftest``). Uses ``lake``, ``detections`` and ``core``;
nothing here talks to AWS.
"""
