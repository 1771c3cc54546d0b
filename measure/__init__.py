"""Measurement scripts: what the project's targets and tables rest on, run by hand.

Each script says what it measures in its first line and runs as ``python -m
measure.<name>`` from the repository root; none is part of the installed package.
docs/performance.md lists them with their options.
"""
