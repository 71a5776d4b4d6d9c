"""The bottom layer: what a detection may use, and nothing that reads or sends anything.

Errors (``errors``), references to objects (``objects``), the allowlist and its matching
(``allowlist``), the spec a detection is declared with (``spec``), and the building blocks of
its predicates: SQL text (``sqlparts``) and request-JSON tests (``requestjson``). Imports only
from the standard library, pyarrow and itself.
"""
