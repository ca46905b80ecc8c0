"""``python -m vaekit`` (and ``torchrun -m vaekit``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
