"""The FastAPI service of fastapi_items.py with coroscope's explicit middleware added, as a user who
prefers code writes it: with tracing on, each request must still be marked once."""
from diag.middleware import CoroscopeASGIMiddleware

from fastapi_items import app

app.add_middleware(CoroscopeASGIMiddleware)
