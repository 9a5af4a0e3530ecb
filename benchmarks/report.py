"""Turn every results file in benchmarks/results/ into docs/benchmarks.md. Nothing in that file is typed
by hand: tables, targets met / not met and speed ratios come from the JSON files, and the prose around them
from benchmarks/report_templates/, its numbers filled in from the same files (the package
benchmarks/reporting/).

    .venv/bin/python benchmarks/report.py
"""
from __future__ import annotations

import sys

from reporting.document import main

if __name__ == "__main__":
    sys.exit(main())
