"""Run the schedd CLI with a wall clock a test can shift while the daemon runs:

    python tests/shifted_clock.py OFFSET_FILE serve --db ...

OFFSET_FILE holds a whole number of milliseconds added to the system's wall time (empty or
missing: 0); a test rewrites it to make the clock jump forward or back. Only the wall
clock moves (SystemClock.now_ms: due times, records, webhook timestamps); monotonic time,
which paces sleeps, does not, exactly as when an administrator or NTP steps the clock.

A test shim, not a setting: schedd reads the time only through schedd.clock (a rule
tests/test_layering.py enforces), so replacing SystemClock.now_ms here shifts all of it
without any test-only code in the daemon.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    path, argv = sys.argv[1], sys.argv[2:]
    from schedd import clock
    from schedd.cli import main as cli_main

    real_now_ms = clock.SystemClock.now_ms
    seen: list[int] = [-1, 0]  # the file's mtime_ns when last read, the offset it held

    def offset_ms() -> int:
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return 0
        if mtime != seen[0]:
            with open(path, encoding="ascii") as f:
                text = f.read().strip()
            if text:  # a half-written file is read again at the next call
                seen[0], seen[1] = mtime, int(text)
        return seen[1]

    def shifted_now_ms(self: clock.SystemClock) -> int:
        return real_now_ms(self) + offset_ms()

    clock.SystemClock.now_ms = shifted_now_ms  # type: ignore[method-assign]
    return cli_main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
