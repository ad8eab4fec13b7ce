"""``python -m durable worker ...``: see `durable._cli`."""

import sys

from durable._cli import main

sys.exit(main())
