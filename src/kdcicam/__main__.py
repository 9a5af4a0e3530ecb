"""``python -m kdcicam``: the `kdcicam` command."""
import sys

from .cli import main

sys.exit(main())
