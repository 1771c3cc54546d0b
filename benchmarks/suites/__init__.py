"""The shipped suites (``*.toml`` in this folder) and the code that reads them.

* :mod:`~benchmarks.suites.suite`: a bench suite (env, budget, objectives, agents,
  seeds, the new-objective track), validated, located errors;
* :mod:`~benchmarks.suites.table`: the ``[table]`` section that ``lossagent tabulate``
  builds from;
* :mod:`~benchmarks.suites.size`: the size of a table, counted before anything is built;
* :mod:`~benchmarks.suites.tomlpos`: the line of a key in a TOML file, for messages.
"""
