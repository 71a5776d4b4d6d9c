"""What people and machines are told: alerts per principal and their renderings.

Findings rolled up per (detection, account, principal[, bucket]) with exact totals
(``alerts``; who the principal is: ``principals``), the message and its JSON (``digest``), the
email in it (``email``, shown safely: ``plaintext``), Security Hub's ASFF (``asff``) and its
checks (``asff_checks``), and mutes from triage (``mutes``). Pure: no AWS calls; uses
``analysis`` and below.
"""
