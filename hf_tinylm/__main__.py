"""`python -m hf_tinylm`: the `tinylm` command."""

import sys

from .cli import main

sys.exit(main())
