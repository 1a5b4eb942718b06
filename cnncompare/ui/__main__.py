"""`python -m cnncompare.ui`: the web app (`cnncompare app` hands its process to this)."""

import sys

from . import main

sys.exit(main())
