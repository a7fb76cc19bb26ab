"""`python -m hbd.demo`: see hbd.demo.run."""

import sys

from hbd.demo.run import main

sys.exit(main())
