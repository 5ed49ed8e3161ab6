"""``python -m tracking.cli``: the ``tracking`` command."""

import sys

from tracking.cli import main

sys.exit(main(prog_name="tracking"))
