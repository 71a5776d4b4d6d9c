"""Wiring: the Lambda's settings, the pipeline from notifications to alerts, the sinks, and the
command line. The only layer that puts the others and the AWS adapters (``aws``) together;
``detector.handler`` (the Lambda entry point) sits on top of it.
"""
