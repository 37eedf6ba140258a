import sys

try:
    from .run.app import cli
except KeyboardInterrupt:  # Ctrl-C while the imports load: nothing has run yet
    print("error: interrupted while starting: nothing was run", file=sys.stderr, flush=True)
    sys.exit(128 + 2)

sys.exit(cli(sys.argv[1:]))
