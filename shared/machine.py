"""Name the machine next to the numbers a benchmark or a load test prints."""

from __future__ import annotations

import os
import platform


def machine() -> str:
    """CPU model and core count."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            model = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} cores"
