import sys

from .run.app import cli

sys.exit(cli(sys.argv[1:]))
