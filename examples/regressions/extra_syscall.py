"""The example service plus one getppid() syscall per request."""
import os
import sys

from examples.http_service import Plant, main


class ExtraSyscall(Plant):
    name = "extra_syscall"

    def on_request(self, connection_requests: int) -> None:
        os.getppid()  # glibc does not cache getppid: one real syscall each time


if __name__ == "__main__":
    sys.exit(main(plant=ExtraSyscall()))
