"""rtlearn: real-time online inverse-dynamics learning with a memory of learning rates.

Data flow, one sub-package each:
    sources  -> protocol -> service -> learner (network, optimizer, memory) -> predictions
"""

__version__ = "0.1.0"
