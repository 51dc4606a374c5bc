"""The example service leaving one pending task behind per connection.

Each connection starts an idle-timeout watchdog task that nobody cancels when the connection
closes: it sleeps on, held by the loop's timer heap, one more per connection. No fd, no thread,
no syscall per request: only the count of live tasks grows.
"""
import asyncio
import sys

from examples.http_service import Plant, main

WATCHDOG_SECONDS = 3600


async def _idle_watchdog() -> None:
    await asyncio.sleep(WATCHDOG_SECONDS)


class TaskLeak(Plant):
    name = "task_leak"

    def on_connection(self) -> None:
        # the defect: started per connection, never cancelled in connection_lost
        asyncio.get_running_loop().create_task(_idle_watchdog())


if __name__ == "__main__":
    sys.exit(main(plant=TaskLeak()))
