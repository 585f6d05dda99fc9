"""``python -m mailnode`` runs the CLI."""

import sys

from mailnode.cli import main

sys.exit(main())
