"""``python -m dynamicrafter.cli`` (e.g. under ``torchrun``): the same as the ``dynamicrafter`` command."""

import sys

from dynamicrafter.cli import main

sys.exit(main())
