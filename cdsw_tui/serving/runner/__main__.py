"""Run as ``python <folder of this file> ARGS``: put the folder holding ``cdsw_tui`` on the
path, import the runner whole, then take that folder off the path again, so model code
sees its own project and environment, not the installation cdsw-tui came from."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))  # holds cdsw_tui/
if sys.path and os.path.abspath(sys.path[0] or ".") == HERE:
    del sys.path[0]
sys.path.insert(0, ROOT)
from cdsw_tui.serving.runner.main import main  # noqa: E402  (the runner, imported whole)

sys.path.remove(ROOT)
main()
