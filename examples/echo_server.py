"""An unchanged asyncio echo service (streams), for `coroscope run` and the runtime's README.

    coroscope run -- python examples/echo_server.py [--port 8888] [--seconds N]
    python -m runtime examples/echo_server.py

It prints the loop it runs on and the port, then echoes each line back until stopped (Ctrl-C, or
after --seconds). Nothing in it knows about coroscope: the loop comes from the policy installed
around it.
"""
import argparse
import asyncio


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
    finally:
        writer.close()


async def main(port: int, seconds: float | None) -> None:
    server = await asyncio.start_server(echo, "127.0.0.1", port)
    loop = asyncio.get_running_loop()
    print(f"echo server on 127.0.0.1:{server.sockets[0].getsockname()[1]} "
          f"({type(loop).__module__}.{type(loop).__name__})", flush=True)
    async with server:
        if seconds is None:
            await server.serve_forever()
        else:
            await asyncio.sleep(seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="line echo server on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.port, args.seconds))
    except KeyboardInterrupt:
        pass
