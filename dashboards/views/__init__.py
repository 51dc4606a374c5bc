"""One module per dashboard view; each is a widget with ``show(snapshot, findings)``."""
