"""The report of a benchmark, rebuilt from ``results.jsonl`` alone.

* :mod:`~benchmarks.reports.report`: ``summary.csv``, ``report.md``, plots
  (:func:`build_report`);
* :mod:`~benchmarks.reports.scores`: the verdicts of a table replay, per test instance
  and paired by replicate;
* :mod:`~benchmarks.reports.stats`: the statistics (paired t, stratified means, Holm,
  rliable's bootstrap), pure functions over arrays;
* :mod:`~benchmarks.reports.render`: Markdown and plots, no statistics;
* ``templates/``: the Markdown fragments of ``report.md``.
"""
