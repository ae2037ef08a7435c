"""glibc malloc settings that keep freed memory for reuse (a training process, loader workers)."""

import platform
import subprocess
import sys

import pytest

from guidedmae.infra.memory import MALLOC_SETTINGS, TRAINING_TRIM_THRESHOLD

# A training step's pattern: ~300 MB of 9 MB tensors (weight casts, activations) allocated, then all freed.
STEP_FAULTS = """
import resource, sys, torch
from guidedmae.infra.memory import keep_freed_memory
applied = keep_freed_memory(int(sys.argv[1])) if int(sys.argv[1]) else False
def step():
    tensors = [torch.ones(2_359_296) for _ in range(32)]
    del tensors
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
"""


def faults_per_step(trim_threshold: int) -> tuple[bool, float]:
    result = subprocess.run(
        [sys.executable, "-c", STEP_FAULTS, str(trim_threshold)], capture_output=True, text=True, check=True
    )
    applied, faults = result.stdout.split()
    return applied == "True", float(faults)


GLIBC_ONLY = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the malloc settings are glibc's")


@GLIBC_ONLY
def test_a_training_process_reuses_the_memory_its_last_step_freed(monkeypatch):
    for name in MALLOC_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    _, plain = faults_per_step(0)
    if plain < 1000:
        pytest.skip(f"this malloc keeps freed blocks already ({plain:.0f} page faults per step)")
    applied, ours = faults_per_step(TRAINING_TRIM_THRESHOLD)
    assert applied
    assert ours < 100, f"{ours:.0f} page faults per step after keep_freed_memory (without: {plain:.0f})"


@GLIBC_ONLY
def test_a_users_own_malloc_settings_are_left_alone(monkeypatch):
    for name in MALLOC_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert faults_per_step(TRAINING_TRIM_THRESHOLD)[0] is True
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert faults_per_step(TRAINING_TRIM_THRESHOLD)[0] is False
