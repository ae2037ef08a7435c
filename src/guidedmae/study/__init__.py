"""Studies: one command runs a protocol (base pretraining, arms x seeds, evaluations) and tabulates it.

plan (the study file and its runs), leaks (no evaluation on training data), launch (submitit: local,
Slurm, or in this process), runner (checks, launches what is not done, writes the tables), stats
(paired differences, Holm, equivalence, power), tables (means, spreads, verdicts; figures).

Layer: may import guidedmae.infra, config and engine (and what they build on).
"""

__all__ = ["launch", "leaks", "plan", "runner", "stats", "tables"]
