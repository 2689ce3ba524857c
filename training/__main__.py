"""``python -m kdaliens.training`` (and ``torchrun -m kdaliens.training``) = kdaliens-train."""

import sys

from .cli import main

sys.exit(main())
