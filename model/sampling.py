"""Sampling parameters, validated with errors that name the parameter and its range."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


class SamplingError(ValueError):
    pass


@dataclass
class SamplingParams:
    temperature: float = 0.8  # 0 means greedy
    top_k: int = 0  # 0 means off
    top_p: float = 0.95  # 1 means off
    min_p: float = 0.0  # 0 means off
    repetition_penalty: float = 1.0  # 1 means off
    max_tokens: int = 256
    seed: int | None = None  # None: a fresh seed per request
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)

    def validate(self) -> "SamplingParams":
        checks = [
            ("temperature", self.temperature >= 0, "must be >= 0 (0 is greedy)"),
            ("top_k", isinstance(self.top_k, int) and self.top_k >= 0, "must be an integer >= 0 (0 is off)"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1] (1 is off)"),
            ("min_p", 0 <= self.min_p <= 1, "must be in [0, 1] (0 is off)"),
            ("repetition_penalty", self.repetition_penalty > 0, "must be > 0 (1 is off)"),
            ("max_tokens", isinstance(self.max_tokens, int) and self.max_tokens >= 1, "must be an integer >= 1"),
            ("seed", self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed < 2**63), "must be an integer in [0, 2^63)"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise SamplingError(f"{name} {rule}, got {getattr(self, name)!r}")
        return self

    def to_dict(self) -> dict:
        return asdict(self)
