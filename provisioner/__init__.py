"""provisioner: phone-provisioning integration service for PBX operators."""

import sys


def command(*args: str) -> list[str]:
    """``python -m provisioner <args>`` for a child process (``serve``'s phones' processes and
    push worker): the same interpreter, and ``-P`` when this process was started with it, so
    the child finds the same code on ``sys.path`` (with the same working directory and
    ``PYTHONPATH``, which it inherits)."""
    return [sys.executable, *(["-P"] if sys.flags.safe_path else []), "-m", "provisioner", *args]
