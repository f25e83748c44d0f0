import sys

from insitu.cli import console_main

sys.exit(console_main())
