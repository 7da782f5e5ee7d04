"""`python -m scripts.respawn -- COMMAND...`: run COMMAND, and again each time it exits, until stopped.

`make run` hands its processes to honcho, which prefixes their lines with their names and
stops them all on Ctrl-C or SIGTERM, but also stops them all as soon as one exits, and has
no option to start it again. A Celery worker can exit when Redis restarts (kombu's
"Unrecoverable error"), and the embedded Redis is one of those processes itself: so each
runs under this loop, and honcho sees one exit only once it has been told to stop.

honcho stops a process by signalling its whole process group (SIGTERM, then SIGKILL after
5 s), which holds this loop and the command: the command gets the signal from honcho, and
this loop, which gets it too, waits for the command and exits with it instead of starting
it again. An exit soon after a start waits longer before the next (1 s doubling to 30 s),
so a command that cannot start does not spin.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from types import FrameType

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
#: A run at least this long was not a failed start: the next exit waits FIRST_DELAY again.
STEADY_SECONDS = 30.0


class _Stop:
    """Set by SIGTERM or SIGINT: the loop stops starting the command."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.requested and time.monotonic() < deadline:
            time.sleep(0.1)


def run(command: list[str]) -> int:
    """Run ``command`` until a stop signal; its last exit status, as a shell would give it."""
    stop = _Stop()
    delay = FIRST_DELAY
    while True:
        started = time.monotonic()
        returncode = subprocess.Popen(command).wait()
        if stop.requested:
            return 128 - returncode if returncode < 0 else returncode
        ran = time.monotonic() - started
        if ran >= STEADY_SECONDS:
            delay = FIRST_DELAY
        how = f"signal {-returncode}" if returncode < 0 else f"code {returncode}"
        print(f"exited ({how}) after {ran:.1f} s; starting it again in {delay:.0f} s", flush=True)
        stop.sleep(delay)
        if stop.requested:
            return 0
        delay = min(delay * 2, MAX_DELAY)


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print("usage: python -m scripts.respawn -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return run(argv[argv.index("--") + 1 :])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
