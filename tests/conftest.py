import sys
from pathlib import Path

# tests/naive.py: the plain-numpy references the kernels are tested against.
sys.path.insert(0, str(Path(__file__).parent))
