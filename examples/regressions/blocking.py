"""The example service blocking its event loop for 200 ms on each connection's first request."""
import sys
import time

from examples.http_service import Plant, main


class Blocking(Plant):
    name = "blocking"

    def on_request(self, connection_requests: int) -> None:
        if connection_requests == 1:
            time.sleep(0.2)  # the defect: a blocking call inside a callback


if __name__ == "__main__":
    sys.exit(main(plant=Blocking()))
