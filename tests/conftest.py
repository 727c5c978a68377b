import os
import sys

# the test process is a process start like `pouw` (node/cli/__init__.py): torch's OpenMP workers wait passively instead
# of spinning on the cores the native kernels' threads need (read when torch loads, so set before any test
# module imports it); an explicit setting wins
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, os.path.dirname(__file__))
