"""Benchmarks: suites as data, the runner, the report and plots.

``lossagent bench --suite smoke`` (see :mod:`benchmarks.cli`) is the front door;
:func:`benchmarks.suite.load_suite`, :func:`benchmarks.runner.run_suite` and
:func:`benchmarks.report.build_report` are the same steps as a library.

Modules, each importing only those listed before it:

- :mod:`benchmarks.errors`: the benchmark errors and the record of a failed run;
- :mod:`benchmarks.output`: the owner of an output folder or table file (check, lock,
  resume, clean up);
- :mod:`benchmarks.executor`: where runs and table units execute (inline, process pool,
  Ray), with results streamed back;
- :mod:`benchmarks.suite`: suites as data (TOML), validated;
- :mod:`benchmarks.results`: the output directory: its layout, ``results.jsonl``
  (writer, reader), atomic JSON files and the resume rule;
- :mod:`benchmarks.runs`: run specs and names, one run -> rows (the row schema);
- :mod:`benchmarks.report`: ``summary.csv``, ``report.md`` and plots from the rows;
- :mod:`benchmarks.runner`: :func:`~benchmarks.runner.run_suite`, which ties them up;
- :mod:`benchmarks.cli`: the ``lossagent`` command line, on top of everything.
"""
