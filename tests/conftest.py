import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Subprocesses started by tests import the project from the checkout.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
