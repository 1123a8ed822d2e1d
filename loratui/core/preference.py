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
#: what each figure is (docs/CONTRACTS.md says it)
REWARD_DOCS = {
    "rewards/chosen": "the chosen answers' mean reward: beta x their log-probability ratio to the reference (dpo, "
                      "kto), beta x their mean log-probability (orpo)",
    "rewards/rejected": "the same for the rejected answers",
    "rewards/margins": "chosen minus rejected reward, mean over the pairs",
    "rewards/accuracies": "the share of pairs whose chosen reward is above the rejected one",
}


def reward_fields(logs: dict) -> dict:
    """The reward figures in a log line (TRL's keys), the finite numbers only."""
    import math

    return {k: logs[k] for k in REWARD_KEYS if isinstance(logs.get(k), (int, float)) and math.isfinite(logs[k])}


def shown_rewards(eval_metrics: dict, rewards: dict) -> tuple[dict, bool]:
    """The rewards a view shows: the newest evaluation's (held-out pairs) when it has them, else the newest logged
    step's (training pairs); and whether they are the held-out ones."""
    held_out = reward_fields(eval_metrics or {})
    return (held_out, True) if held_out else (dict(rewards or {}), False)


def scores_text(s) -> str:
    """A run's scores in one line, from its fold (a RunSummary): 'loss 0.4120 · eval 0.4500 · margin +1.720 · pref
    acc 0.90 held-out', a classifier's 'acc 0.733' (its best, as loratui runs); '' before its first logged step. The
    Queue's detail line and `loratui study` say this."""
    parts = []
    if s.loss is not None:
        parts.append(f"loss {s.loss:.4f}")
    if s.eval_loss is not None:
        parts.append(f"eval {s.eval_loss:.4f}")
    if s.best_accuracy is not None:  # a classifier's task metric, as loratui runs shows it
        parts.append(f"acc {s.best_accuracy:.3f}")
    shown, held_out = shown_rewards(s.eval_metrics, s.rewards)
    if "rewards/margins" in shown:
        parts.append(f"margin {shown['rewards/margins']:+.3f}")
    if "rewards/accuracies" in shown:
        parts.append(f"pref acc {shown['rewards/accuracies']:.2f}" + (" held-out" if held_out else ""))
    return " · ".join(parts)
