"""``python -m kdcicam.cli``: the `kdcicam` command."""
import sys

from . import main

sys.exit(main())
