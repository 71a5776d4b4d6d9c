"""Findings: from the rows the reader keeps to what each detection reports.

The engine that runs the enabled detections over objects (``engine``), findings
(``findings``) and their aggregation (``aggregate``), their text and JSON forms (``output``),
the same detections as one Athena statement each (``athena_sql``) and its results and cost
(``athena_results``), allowlist suggestions from findings (``suggest``), and
the runner of the specs' examples (``selftest``). Uses ``lake``, ``detections`` and ``core``;
nothing here talks to AWS.
"""
