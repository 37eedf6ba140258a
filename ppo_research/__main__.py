import os
import sys

try:
    from .run import app
    from .run.signals import stops
except KeyboardInterrupt:  # Ctrl-C while the imports load: nothing has run yet
    os.write(2, b"error: interrupted while starting: nothing was run\n")  # one write: the line stays whole
    os._exit(128 + 2)  # (CPython would re-raise SIGINT at exit after an interrupted import)

status = app.cli(sys.argv[1:])
stops.exit_process(status, at_once=app.interrupted())  # see app.interrupted
