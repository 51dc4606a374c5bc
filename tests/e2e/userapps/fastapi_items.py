"""A FastAPI service as its users write it: no coroscope import, nothing printed.
Each request to /items/{n} makes exactly one getppid syscall, which the framework never makes."""
import asyncio
import os

from fastapi import FastAPI
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.get("/items/{n}")
async def item(n: int):
    os.getppid()
    return {"n": n}


@app.get("/wait/{s}")
async def wait(s: float):
    os.getppid()
    await asyncio.sleep(s)
    return {"waited": s}


@app.get("/stream/{n}")
async def stream(n: int):
    async def body():
        for i in range(n):
            os.getppid()
            yield f"{i}\n".encode()
    return StreamingResponse(body())


@app.get("/fail/{n}")
async def fail(n: int):
    raise RuntimeError(f"planted failure {n}")
