"""The renderer of docs/benchmarks.md (entry point: benchmarks/report.py), one job per module: ``loading``
reads
the results files, ``runs`` asks questions of them, ``formatting`` writes numbers, ``tables`` the metric
tables,
``targets`` the claims' targets and their status, ``mechanisms`` the diagnostics, ``ablations``, ``recipe``,
``speed`` and ``notes`` their sections, ``templates`` the prose (benchmarks/report_templates/), ``document``
the
whole page."""
