"""What a preference run (method.objective dpo, orpo, kto) reports beside its loss, as TRL names it: the step and
eval events carry these keys (eval events with the ``eval_`` prefix dropped, as every eval metric). Light."""

from __future__ import annotations

#: TRL's metric name -> the label the Monitor shows
REWARDS = {
    "rewards/chosen": "chosen",
    "rewards/rejected": "rejected",
    "rewards/margins": "margin",
    "rewards/accuracies": "pref acc",
}
REWARD_KEYS = tuple(REWARDS)


def reward_fields(logs: dict) -> dict:
    """The reward figures in a log line (TRL's keys), the finite numbers only."""
    import math

    return {k: logs[k] for k in REWARD_KEYS if isinstance(logs.get(k), (int, float)) and math.isfinite(logs[k])}
