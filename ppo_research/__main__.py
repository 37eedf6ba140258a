import sys

from .app import cli

sys.exit(cli(sys.argv[1:]))
