"""``python -m rpnkit``: the command line (also what ``torchrun -m rpnkit train`` runs)."""

import sys

from .cli import main

sys.exit(main())
