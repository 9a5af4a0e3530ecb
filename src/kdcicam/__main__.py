"""``python -m kdcicam``: the `kdcicam` command."""
import sys

from .cli import entry

sys.exit(entry())
