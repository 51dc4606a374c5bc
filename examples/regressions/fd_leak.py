"""The example service leaking one fd per connection (an open /dev/null nobody closes)."""
import os
import sys

from examples.http_service import Plant, main


class FdLeak(Plant):
    name = "fd_leak"

    def __init__(self):
        self.kept = []  # the leak: fds that are never closed

    def on_connection(self) -> None:
        self.kept.append(os.open(os.devnull, os.O_RDONLY))


if __name__ == "__main__":
    sys.exit(main(plant=FdLeak()))
