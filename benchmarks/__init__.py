"""Benchmarks: suites as data, the runner, the report and plots.

``lossagent bench --suite smoke`` (see :mod:`benchmarks.cli`) is the front door;
:func:`benchmarks.suite.load_suite`, :func:`benchmarks.runner.run_suite` and
:func:`benchmarks.report.build_report` are the same steps as a library.
"""
