"""Impact benchmark: how long an agreement change's impact report takes on a large partnership.

    python -m bench.impact                        # 1,000 agreements, 12 changes of each kind
    python -m bench.impact --agreements 50 --changes 2   # a smoke run

On the engine benchmark's generated partnership (300 agencies, 48 leaf purposes, 144 leaf
fields; bench/engine.py), for changes of agreements drawn at random: activate (of a
suspended one), suspend, revoke, and a new version adding a field, each timed end to end
as the API does it: the policy recompiled with the change, then both policies asked about
every tuple the agreement reaches. The target (issue 16) is ≤ 2 s; the same run also times
one full compile of the partnership, the baseline the report cannot go below, and checks
on two changes that asking the whole vocabulary (not only what the agreement reaches)
finds the same. Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from datetime import UTC, datetime
from typing import Any

from app.decision.impact import Action, Reach, assess, proposed, reach
from app.policy.agreements import parse_agreement
from app.policy.compiler import compile_policy, with_agreement
from app.policy.vocabulary import parse_vocabulary
from app.runtime.snapshot import PolicySnapshot
from bench.engine import MODEL_TEXT, NOW, generate_agreement, generate_vocabulary

TARGET_SECONDS = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--agreements", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=12, help="changes timed per action")
    args = parser.parse_args()
    rng = random.Random(16)
    vocabulary = parse_vocabulary(generate_vocabulary(rng))
    documents = [generate_agreement(n, vocabulary, rng) for n in range(args.agreements)]
    agreements = [parse_agreement(d, vocabulary, version=1) for d in documents]
    started = time.perf_counter()
    policy = compile_policy(
        revision=1, vocabulary=vocabulary, agreements=agreements, model_text=MODEL_TEXT
    )
    compile_seconds = time.perf_counter() - started
    enforcer = PolicySnapshot.of(policy, memoise=False).enforcer
    by_id = {d["id"]: d for d in documents}
    active = [a.id for a in agreements if a.status == "active"]
    suspended = [a.id for a in agreements if a.status == "suspended"] or active
    fields = list(vocabulary.fields.names)

    def timed(agreement_id: str, action: Action) -> tuple[float, int]:
        document = None
        if action == "version":
            grants = by_id[agreement_id]["grants"]
            added = {**grants[0], "fields": [*grants[0]["fields"], rng.choice(fields)]}
            document = {**by_id[agreement_id], "grants": [added, *grants[1:]]}
        began = time.perf_counter()
        changed = proposed(policy, agreement_id, action, document)
        impact = assess(
            policy,
            with_agreement(policy, changed),
            agreement_id=agreement_id,
            action=action,
            now=NOW,
            enforcer=enforcer,
        )
        return time.perf_counter() - began, len(impact.granted) + len(impact.removed)

    rows: list[dict[str, Any]] = []
    for action, pool in (
        ("activate", suspended),
        ("suspend", active),
        ("revoke", active),
        ("version", active),
    ):
        runs = [timed(rng.choice(pool), action) for _ in range(args.changes)]  # type: ignore[arg-type]
        seconds = sorted(run[0] for run in runs)
        rows.append(
            {
                "action": action,
                "p50_s": round(statistics.median(seconds), 3),
                "max_s": round(seconds[-1], 3),
                "tuples_listed_p50": int(statistics.median(run[1] for run in runs)),
            }
        )
    # The report compares only what the agreement reaches; asking the whole vocabulary for
    # the same pairs must find the same (and shows what the restriction saves).
    checks = []
    for agreement_id in rng.sample(active, min(2, len(active))):
        after = with_agreement(policy, proposed(policy, agreement_id, "suspend", None))
        reached = reach((policy, after), agreement_id)
        whole = Reach(reached.pairs, vocabulary.fields.leaves(), vocabulary.purposes.leaves())
        times, answers = [], []
        for scope in (reached, whole):
            began = time.perf_counter()
            answers.append(
                assess(
                    policy,
                    after,
                    agreement_id=agreement_id,
                    action="suspend",
                    now=NOW,
                    enforcer=enforcer,
                    scope=scope,
                )
            )
            times.append(time.perf_counter() - began)
        checks.append(
            {
                "agreement": agreement_id,
                "reach_s": round(times[0], 3),
                "whole_vocabulary_s": round(times[1], 3),
                "same": answers[0] == answers[1],
            }
        )
    worst = max(row["max_s"] for row in rows)
    print(f"impact report on {args.agreements:,} agreements ({len(active):,} active)")
    print(f"full compile of the partnership: {compile_seconds:.3f} s (baseline)")
    print(f"{'action':<10} {'p50 s':>8} {'max s':>8} {'tuples p50':>11}")
    for row in rows:
        listed = row["tuples_listed_p50"]
        print(f"{row['action']:<10} {row['p50_s']:>8} {row['max_s']:>8} {listed:>11}")
    for check in checks:
        print(
            f"{check['agreement']}: reach {check['reach_s']} s, whole vocabulary "
            f"{check['whole_vocabulary_s']} s, same answer: {check['same']}"
        )
    met = "met" if worst <= TARGET_SECONDS else "NOT met"
    print(f"target: every report ≤ {TARGET_SECONDS} s: worst {worst} s, {met}")
    figures = {
        "agreements": args.agreements,
        "compile_seconds": round(compile_seconds, 3),
        "actions": rows,
        "whole_vocabulary_checks": checks,
        "worst_seconds": worst,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps({"impact": figures}))


if __name__ == "__main__":
    main()
