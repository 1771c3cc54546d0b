"""Measurement scripts: what the project's targets and tables rest on, run by hand.

Each script says what it measures in its first line and runs as ``python -m
measure.<name>`` from the repository root; none is part of the installed package.

* ``perf``: the env's training overhead over a bare PyTorch loop, and evaluation's share;
* ``perf_data``: data preparation of a paper-scale stage against a per-patch reference;
* ``perf_node``: where a table node's time goes;
* ``perf_smoke``: the main job, ``lossagent bench --suite smoke``, against its targets;
* ``perf_tabular``: steps per second of a table replay, and PPO's training on a table;
* ``workers_ratio``: the speed-up of ``lossagent bench --workers 2`` over ``--workers 1``;
* ``screen``: preset sequences trained live before a table is sized (every crop kept);
* ``gpu_check``: the CUDA path on a machine with a GPU;
* ``local_llm_probe``: validity and latency of the embedded model's structured answers.
"""
