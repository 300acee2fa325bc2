"""numba kernels: contiguous arrays in, arrays out, no Python objects.

Each kernel's docstring names the equation of docs/algorithm.md it implements. The objects
that own state (rtlearn.learner) allocate every buffer once and call these.
"""

# fastmath without 'nnan'/'ninf': NaN/Inf checks must keep working (PITFALLS.md).
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
JIT = dict(nogil=True, cache=True, fastmath=FASTMATH)
