"""The report model: plain dataclasses with a stable JSON form, one module per concern.

Collectors fill these; the terminal view, the dashboard, the HTML report and the CI gate
render them. Nothing here imports a view.
"""
from .base import to_jsonable, write_json_atomic, write_text_atomic

__all__ = ["to_jsonable", "write_json_atomic", "write_text_atomic"]
