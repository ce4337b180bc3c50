import sys

from mmsearch.cli import main

sys.exit(main())
