"""`python -m owl2.train --config CONFIG.yaml [--set key=value ...]`: see `owl2.train.main`."""

import sys

from owl2.train.main import main

sys.exit(main())
