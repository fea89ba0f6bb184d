import sys

from tokensieve.cli import main

sys.exit(main())
