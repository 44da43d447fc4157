"""B5: the rule engine's compiled rules against hand-written Python (engine/bench/rules_b5.py)."""

from __future__ import annotations

from typing import Any

from engine.bench.scenarios.options import Options


def b5(opts: Options) -> dict[str, Any]:
    from engine.bench import rules_b5

    messages = opts.messages or (100_000 if opts.full else 10_000)
    r = rules_b5.run(messages)
    return {
        "scenario": "B5",
        "gateway": {"compiled_s": r["compiled_s"], "msgs_per_s": r["compiled_msgs_per_s"]},
        "baseline": {"handwritten_s": r["handwritten_s"],
                     "msgs_per_s": round(messages / r["handwritten_s"]) if r["handwritten_s"] else None},
        "ratio": r["ratio"], "ratio_of": "compiled rule time / hand-written Python time",
        "bar": {"ratio_max": r["bar"]}, "meets_bar": r["meets_bar"], "messages": messages, "rounds": 5,
    }
