import os

# as in node/__init__.py: no OpenMP workers left spinning against the native kernels (set before torch loads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
