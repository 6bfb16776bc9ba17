"""The steps between two records of the training log, and how a record is written."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

__all__ = ["LogWindow", "json_line", "number_text"]


@dataclass
class LogWindow:
    """What the steps since the last log record left: their losses (of the steps that had
    one), named values to average (loss terms, gradient norms), how many steps, the learning
    rate the last one used and when the window started."""

    losses: List[float] = field(default_factory=list)
    values: Dict[str, List[float]] = field(default_factory=dict)
    steps: int = 0
    lr: float = 0.0
    start: float = field(default_factory=time.perf_counter)

    def add(self, values: Dict[str, float]) -> None:
        for name, value in values.items():
            self.values.setdefault(name, []).append(value)

    def mean_loss(self) -> Optional[float]:
        return sum(self.losses) / len(self.losses) if self.losses else None

    def means(self) -> Dict[str, float]:
        return {name: sum(v) / len(v) for name, v in self.values.items()}


def number_text(value: float) -> str:
    """``value`` as a message shows it: "NaN" for not-a-number, else ``str``."""
    return "NaN" if math.isnan(value) else str(value)


def json_line(record: Dict[str, Any]) -> str:
    """``record`` as one line of strict JSON: NaN and infinities become strings (JSON has no
    such numbers; a float16 run's gradient norm is infinite on the steps the scaler skips)."""
    safe = {
        k: number_text(v) if isinstance(v, float) and not math.isfinite(v) else v
        for k, v in record.items()
    }
    return json.dumps(safe, allow_nan=False)
