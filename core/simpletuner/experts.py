"""Two-expert models: Wan 2.2 A14B denoises with a high-noise expert, then hands over to a low-noise one (at the
pipeline's `boundary_ratio`). SimpleTuner 4.10.1 trains one expert per run, each a flavour of its own:
`i2v-14b-2.2-high` / `i2v-14b-2.2-low` (Wan2.2-I2V-A14B) and `animegen-t2v-high` / `animegen-t2v-low`
(Wan2.2-T2V-A14B with AnimeGen's experts), as its examples `wan-2.2-i2v-a14b-high/low.peft-lora+TREAD` do.

A job's `experts` says which to train: "high", "low" or "both" (two SimpleTuner runs in sequence, high first, the
order the pipeline runs them in). Found from the flavour names in SimpleTuner's own table: a `<stem>-high` flavour
with a `<stem>-low` sibling.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import SpecError
from core.outputs import expert_folder
from core.simpletuner.families import hub_ids, model_table

EXPERT_NAMES = ("high", "low")
"""In the order a "both" job trains them."""
BOTH = "both"
FIELD = "experts"


@dataclass(frozen=True)
class Expert:
    name: str
    """high | low"""
    flavour: str
    """SimpleTuner's --model_flavour that trains it."""

    @property
    def folder(self) -> str:
        """Its output folder in the job's output, and its folder in the published repo: high_noise, low_noise."""
        return expert_folder(self.name)

    @property
    def label(self) -> str:
        return f"{self.name}-noise"


def expert_pair(family: str, flavour: str | None) -> dict[str, str]:
    """{"high": flavour, "low": flavour} when `flavour` is one expert of a two-expert model; {} otherwise."""
    stem, _, side = (flavour or "").rpartition("-")
    if not stem or side not in EXPERT_NAMES:
        return {}
    pair = {name: f"{stem}-{name}" for name in EXPERT_NAMES}
    return pair if all(name in hub_ids(family) for name in pair.values()) else {}


def resolve_experts(family: str, flavour: str | None, *, asked: str | None, flavour_given: bool) -> list[Expert]:
    """The experts a job trains, in order; [] for a model with one denoiser. `asked`: the job's `experts`;
    `flavour_given`: the job set model_flavour itself (it then says which expert when `experts` is left out; a Hub
    id alone means both). A contradiction, or `experts` for another model, is a SpecError naming the field."""
    pair = expert_pair(family, flavour)
    if not pair:
        if asked is not None:
            raise SpecError(f"only a two-expert model (Wan 2.2 A14B: flavours {', '.join(two_expert_flavours())}) "
                            f"has experts to choose; {family} {flavour or '(no flavour)'} has one denoiser: leave "
                            "experts out", field=FIELD)
        return []
    implied = next(name for name, value in pair.items() if value == flavour) if flavour_given else None
    chosen = asked or implied or BOTH
    if asked in EXPERT_NAMES and implied and asked != implied:
        raise SpecError(f"experts {asked!r} contradicts config.model_flavour {flavour!r} (the {implied}-noise "
                        f"expert): set one of them", field=FIELD)
    names = EXPERT_NAMES if chosen == BOTH else (chosen,)
    return [Expert(name, pair[name]) for name in names]


def two_expert_flavours() -> list[str]:
    """Every flavour of SimpleTuner's table that is one expert of a two-expert model."""
    return [flavour for family in model_table()["families"] for flavour in hub_ids(family)
            if expert_pair(family, flavour)]
