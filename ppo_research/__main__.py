import os
import sys

try:
    from .run import app, stops
except KeyboardInterrupt:  # Ctrl-C while the imports load: nothing has run yet
    print("error: interrupted while starting: nothing was run", file=sys.stderr, flush=True)
    os._exit(128 + 2)  # (CPython would re-raise SIGINT at exit after an interrupted import)

status = app.cli(sys.argv[1:])
if app.interrupted():  # see app.interrupted
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
stops.exit_process(status)
