"""What people and machines are told: alerts per principal and their renderings.

Findings rolled up per (detection, account, principal[, bucket]) with exact totals
(``alerts``), the email and its JSON (``digest``), Security Hub's ASFF (``asff``), and mutes
from triage (``mutes``). Pure: no AWS calls; uses ``analysis`` and below.
"""
