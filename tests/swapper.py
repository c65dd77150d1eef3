"""A local attacker who can write into an import directory, run as its own program
(`setpriv` makes it another user): it waits with inotify until the submitter has listed a
directory, then swaps what the listing named.

    python tests/swapper.py link DIR TARGET   DIR listed: renamed away, a link to TARGET
                                              put in its place
    python tests/swapper.py fifo DIR NAME     DIR listed: DIR/NAME replaced by a FIFO

It prints "ready" once it watches, and "swapped" once it has made the swap.
"""

from __future__ import annotations

import os
import sys

from inotify_simple import INotify, flags


def main(mode: str, directory: str, arg: str) -> None:
    inotify = INotify()
    inotify.add_watch(directory, flags.CLOSE_NOWRITE)  # a listing ends with the close
    print("ready", flush=True)
    while not any(e.mask & flags.ISDIR and not e.name for e in inotify.read()):
        pass
    if mode == "link":
        os.rename(directory, directory + ".moved")
        os.symlink(arg, directory)
    else:
        victim = os.path.join(directory, arg)
        os.unlink(victim)
        os.mkfifo(victim)
    print("swapped", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
