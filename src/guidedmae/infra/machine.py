"""What machine a measurement comes from: every throughput figure must name its CPU (and card)."""

import os
import platform
from pathlib import Path

__all__ = ["cpu_bf16_units", "cpu_name", "describe_machine"]

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # CPU flags of bf16 matrix units (bf16 autocast's fast path)


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_name() -> str:
    """The CPU's model name."""
    for line in _cpuinfo():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_bf16_units() -> tuple[str, ...]:
    """The bf16 matrix-unit flags the CPU has (empty: bf16 autocast is slower than fp32 there)."""
    flags = next((line.split(":", 1)[1].split() for line in _cpuinfo() if line.startswith("flags")), [])
    return tuple(flag for flag in BF16_FLAGS if flag in flags)


def describe_machine() -> str:
    """One line: the CPU, its cores and bf16 units."""
    units = ", ".join(cpu_bf16_units()) or "no bf16 matrix units"
    return f"{cpu_name()}, {os.cpu_count()} cores ({units})"
