"""Reading Amazon Security Lake: what is announced and what an object holds.

Notifications (SQS, EventBridge, S3) to object references (``notifications``); the Parquet
footer, walked without trusting it (``parquet_footer``); the two OCSF schema versions mapped to
one internal shape (``schema``); the reader that reads each object once for every enabled
detection, cheapest column first (``reader``), with what it decides before reading (``plan``),
the operation column (``operations``) and which rows each detection keeps (``verdicts``); the
Thrift decoding under the footer walk (``thrift``); single events written as objects, for
detection authors (``records``). Uses ``core`` and the specs in ``detections``.
"""
