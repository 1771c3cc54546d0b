"""Executing a suite's runs or a table's units (:mod:`benchmarks.runner` ties them to the report).

* :mod:`~benchmarks.execution.output`: the owner of an output folder or table file
  (check, lock, resume, clean up);
* :mod:`~benchmarks.execution.executor`: where runs and table units execute (inline,
  process pool, Ray), with results streamed back;
* :mod:`~benchmarks.execution.results`: the output folder's layout, ``results.jsonl``
  (writer, reader), atomic JSON files and the resume rule;
* :mod:`~benchmarks.execution.runs`: run specs and names; one run -> rows;
* :mod:`~benchmarks.execution.tabulate`: :func:`tabulate`, a suite's ``[table]`` -> a
  table file.
"""
