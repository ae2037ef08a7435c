"""What a run reports: a progress bar, TensorBoard scalars and one JSON object per line in metrics.jsonl.

Only rank 0 reports (`enabled=False` elsewhere makes every method a no-op). metrics.jsonl is only
ever appended to: a resumed run adds its lines after those of the run it continues (with a
{"event": "resumed"} line between them), so steps logged after the last checkpoint of a killed run
appear twice, the later line being the one that counts.
"""

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from guidedmae.infra.files import json_compatible, open_no_follow
from guidedmae.infra.trackers import Tracker

METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"


def _open_metrics(path: Path) -> TextIO:
    """metrics.jsonl opened for appending, never through a symbolic link (see guidedmae.infra.files). A killed
    writer may have left half a line: it is ended first, so the next line stays parseable."""
    handle = open_no_follow(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    size = os.fstat(handle).st_size
    if size and os.pread(handle, 1, size - 1) != b"\n":
        os.write(handle, b"\n")
    return os.fdopen(handle, "a")


def read_metrics(path: Path) -> list[dict]:
    """The JSON objects of a metrics.jsonl, skipping any half-written line a killed run left (the start of a
    record; zeros where a crash lost a file's last block). Any other line is a ValueError naming the file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a {METRICS} (not UTF-8 text, byte {error.start})") from error
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if line.startswith("{") or not line.strip("\x00"):
                continue
            record = None
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}: line {number} is not a JSON object; expected a {METRICS} of one per line"
            )
        records.append(record)
    return records


class RunLogger:
    """Progress bar (steps, loss, lr, samples/s, ETA), TensorBoard scalars and metrics.jsonl of a run."""

    def __init__(
        self,
        out_dir: Path,
        total_steps: int,
        initial_step: int = 0,
        enabled: bool = True,
        trackers: Iterable[Tracker] = (),
    ) -> None:
        """trackers: guidedmae.infra.trackers, told what the run logs (W&B, MLflow)."""
        self.enabled = enabled
        self.trackers = list(trackers)
        if not enabled:
            return
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = out_dir / METRICS
        self.metrics = _open_metrics(self.metrics_path)  # open for the whole run, closed in close()
        # purge_step hides the events a killed run wrote after the checkpoint this run resumes from.
        self.tensorboard = SummaryWriter(str(out_dir / TENSORBOARD), purge_step=initial_step or None)
        self.bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True)

    def _write(self, record: dict) -> None:
        # Non-finite floats as "nan", "inf", "-inf": strict JSON, and a loss that went NaN still reads as one.
        self.metrics.write(json.dumps(json_compatible(record, str), allow_nan=False) + "\n")
        self.metrics.flush()

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """Log scalar values of a step: one metrics.jsonl line, TensorBoard, the bar's postfix."""
        if not self.enabled:
            return
        self._write({"step": step, **values})
        for name, value in values.items():
            self.tensorboard.add_scalar(name, value, step)
        for tracker in self.trackers:
            tracker.scalars(step, values)
        shown = {key: values[key] for key in ("loss", "lr", "samples_per_s") if key in values}
        self.bar.set_postfix({key: f"{value:.4g}" for key, value in shown.items()}, refresh=False)

    def event(self, kind: str, message: str, **fields: object) -> None:
        """Something that happened (resumed, skipped step, weights check): printed and recorded as
        {"event": kind, "message": message, "time": unix seconds, **fields}."""
        if not self.enabled:
            return
        self.bar.write(message)
        self._write({"event": kind, "message": message, "time": round(time.time(), 3), **fields})

    def picture(self, path: Path, step: int) -> None:
        """A picture the run wrote (reconstructions), for the trackers."""
        for tracker in self.trackers:
            tracker.picture(path, step)

    def results(self, results: dict, path: Path) -> None:
        """The run's final results (written to `path`), for the trackers."""
        for tracker in self.trackers:
            tracker.results(results, path)

    def advance(self, steps: int = 1) -> None:
        if self.enabled:
            self.bar.update(steps)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        if not self.enabled:
            return
        self.bar.close()
        self.tensorboard.close()
        self.metrics.close()


def run_seconds(path: Path) -> float | None:
    """Wall-clock seconds between a run's first event and its last (from metrics.jsonl), if it logged any."""
    times = (
        [record["time"] for record in read_metrics(path) if "event" in record and "time" in record]
        if Path(path).is_file()
        else []
    )
    return times[-1] - times[0] if len(times) > 1 else None
