import os
import sys

from .run.signals import stops

try:
    with stops.sigint_deferred():  # torch's C++ start-up can abort (SIGABRT) on a Ctrl-C: it waits
        from .run import app
except KeyboardInterrupt:  # Ctrl-C while the imports load: nothing has run yet
    os.write(2, b"error: interrupted while starting: nothing was run\n")  # one write: the line stays whole
    os._exit(128 + 2)  # (CPython would re-raise SIGINT at exit after an interrupted import)

status = app.cli(sys.argv[1:])
stops.exit_process(status, at_once=app.interrupted())  # see app.interrupted
