import os
import sys

try:
    from .run import app
except KeyboardInterrupt:  # Ctrl-C while the imports load: nothing has run yet
    print("error: interrupted while starting: nothing was run", file=sys.stderr, flush=True)
    os._exit(128 + 2)  # (CPython would re-raise SIGINT at exit after an interrupted import)

import atexit

status = app.cli(sys.argv[1:])
if app.interrupted() or app.stopped():  # see those two
    if app.stopped():
        atexit._run_exitfuncs()  # the libraries' exit work (wandb's), still under the stop handler
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
sys.exit(status)
