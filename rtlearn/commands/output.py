"""Shared output of the commands: `--json PATH|-`."""

import json
import sys


def write_json(result: dict, dest: str | None) -> None:
    """Write `result` to the file `dest`, or to stdout when dest is "-"; nothing when None."""
    if not dest:
        return
    text = json.dumps(result, indent=2) + "\n"
    if dest == "-":
        sys.stdout.write(text)
    else:
        with open(dest, "w") as f:
            f.write(text)
