"""rtlearn: real-time online inverse-dynamics learning with a memory of learning rates.

Data flow, one sub-package each:
    sources  -> protocol -> service -> learner (network, optimizer, memory) -> predictions
"""

from pathlib import Path

__version__ = "0.1.0"


def get_include() -> str:
    """The folder holding the C++ client's header, `rtlearn/client.hpp` (docs/cpp.md):
    compile with `-I$(python -c "import rtlearn; print(rtlearn.get_include())")`."""
    return str(Path(__file__).parent / "include")
