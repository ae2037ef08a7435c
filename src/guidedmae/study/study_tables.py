"""What a study's runs gave, as its tables, figures and headroom check read it (guidedmae.study.tables
collects it from the runs' results)."""

from dataclasses import dataclass, field

__all__ = ["StudyTables"]


@dataclass
class StudyTables:
    arms: list[str]
    replicates: list[str]  # s<seed>, or b<base>-s<seed> with several bases
    controls: dict[str, str]  # compared arm -> the arm its differences are to
    margins: dict[str, float] = field(default_factory=dict)  # the study's, by metric or name
    sanity: set[str] = field(default_factory=set)  # arms that check the set-up: no correction, no power
    floor: str = ""  # the arm of random weights (arms[].random_init), the headroom check's reference
    values: dict[str, dict[str, dict[str, float]]] = field(
        default_factory=dict
    )  # metric -> arm -> replicate -> value
    fractions: dict[str, dict[float, str]] = field(default_factory=dict)  # evaluation -> fraction -> source
    curves: dict[str, dict[str, dict[int, float]]] = field(
        default_factory=dict
    )  # arm -> replicate -> step -> loss
    missing: list[str] = field(default_factory=list)  # runs without results

    def margin(self, metric: str) -> float | None:
        """The study's margin of a metric: given for the metric, or for its name under every source."""
        return self.margins.get(metric, self.margins.get(metric.split(": ", 1)[-1]))
