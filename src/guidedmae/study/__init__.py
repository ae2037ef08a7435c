"""Studies: one command runs a protocol (base pretraining, arms x seeds, evaluations) and tabulates it.

plan (the study file and its runs), launch (submitit: local, Slurm, or in this process), tables (means,
spreads and paired confidence intervals over seeds; figures), cli (`guidedmae study`).
"""

__all__ = ["cli", "launch", "plan", "tables"]
