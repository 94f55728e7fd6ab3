"""Engine benchmark: compile and evaluate generated partnerships of growing size, in-process.

    python -m bench.engine                       # 10, 1,000 and 10,000 agreements
    python -m bench.engine --sizes 10 200        # a smoke run

For each size: compile time and memory (tracemalloc peak), Casbin policy lines,
then per-field evaluation latency p50/p99 over a fixed request mix, cold
(first time each request is seen) and warm (the same mix again). The p50 ratio
against the smallest size shows whether the cost per decision stays flat as
the policy grows. Then a full reload (recompiling every agreement in a thread,
as a replica does) while decisions go on in the main thread: how long it
took, how many decisions were answered meanwhile, and the slowest. Prints a
table and a JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import threading
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.decision.engine import PersonFacts, Question, evaluate
from app.policy.agreements import Agreement, parse_agreement
from app.policy.compiler import CompiledPolicy, compile_policy
from app.policy.vocabulary import Vocabulary, parse_vocabulary
from app.runtime.collector import collector_paused
from app.runtime.snapshot import PolicySnapshot

MODEL_TEXT = (Path(__file__).resolve().parents[1] / "policies" / "model.conf").read_text()
NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
REQUESTS = 4000


def generate_vocabulary(rng: random.Random) -> dict[str, Any]:
    """300 agencies in 30 groups; purpose and field trees three levels deep."""
    agencies = [
        {"id": f"agency-{n:03d}", "name": f"Agency {n}", "groups": [f"group-{n % 30:02d}"]}
        for n in range(300)
    ]
    purposes = []
    for a in range(6):
        purposes.append({"id": f"p{a}"})
        for b in range(4):
            purposes.append({"id": f"p{a}.s{b}"})
            purposes += [{"id": f"p{a}.s{b}.t{c}"} for c in range(2)]
    fields: list[dict[str, Any]] = []
    classes = ["personal", "special-category", "criminal-offence"]
    for a in range(12):
        fields.append({"id": f"f{a}", "class": classes[a % 3]})
        for b in range(4):
            fields.append({"id": f"f{a}.g{b}"})
            fields += [{"id": f"f{a}.g{b}.h{c}"} for c in range(3)]
    return {"agencies": agencies, "purposes": purposes, "fields": fields}


def generate_agreement(n: int, vocabulary: Vocabulary, rng: random.Random) -> dict[str, Any]:
    agencies = list(vocabulary.agencies)
    purposes = [p for p in vocabulary.purposes.names if p.count(".") >= 1]
    fields = list(vocabulary.fields.names)
    grants = []
    for _ in range(rng.randint(1, 3)):
        grant: dict[str, Any] = {
            "purposes": rng.sample(purposes, rng.randint(1, 2)),
            "fields": rng.sample(fields, rng.randint(2, 5)),
        }
        if rng.random() < 0.3:
            grant["subject"] = {"max_age": 17} if rng.random() < 0.5 else {"min_age": 18}
        grants.append(grant)
    return {
        "id": f"isa-{n:05d}",
        "title": f"Generated agreement {n}",
        "status": "active" if rng.random() < 0.9 else "suspended",
        "valid_from": "2025-01-01",
        "valid_until": "2099-01-01",
        "providers": rng.sample(agencies, rng.randint(1, 2)),
        "recipients": rng.sample(agencies, rng.randint(1, 2)),
        "lawful_basis": {"article6": "public-task", "article9": "x", "article10": "y"},
        "grants": grants,
        "break_glass": {"purposes": grants[0]["purposes"], "fields": grants[0]["fields"][:1]},
    }


def requests_for(
    agreements: list[Agreement], vocabulary: Vocabulary, rng: random.Random
) -> list[tuple[Question, PersonFacts]]:
    """A mix: half between parties that share an agreement, half between any two agencies."""
    agencies = list(vocabulary.agencies)
    leaves = vocabulary.fields.leaves()
    purposes = list(vocabulary.purposes.names)
    mix = []
    for index in range(REQUESTS):
        if index % 2 == 0:
            agreement = rng.choice(agreements)
            requester = rng.choice(sorted(vocabulary.expand_agencies(agreement.recipients)))
            holder = rng.choice(sorted(vocabulary.expand_agencies(agreement.providers)))
            grant = rng.choice(agreement.grants)
            purpose = rng.choice(sorted(vocabulary.purposes.descendants[grant.purposes[0]]))
        else:
            requester, holder, purpose = (
                rng.choice(agencies),
                rng.choice(agencies),
                rng.choice(purposes),
            )
        person = f"P-{rng.randrange(REQUESTS // 4)}"
        question = Question(requester, holder, person, rng.choice(leaves), purpose)
        mix.append((question, PersonFacts(person, rng.choice([None, 9, 15, 40]))))
    return mix


def _percentiles(samples_ns: list[int]) -> tuple[float, float]:
    samples_ns.sort()
    return (
        statistics.median(samples_ns) / 1000,
        samples_ns[int(len(samples_ns) * 0.99) - 1] / 1000,
    )


def measure(size: int, vocabulary_doc: dict[str, Any]) -> dict[str, Any]:
    rng = random.Random(size)
    vocabulary = parse_vocabulary(vocabulary_doc)
    documents = [generate_agreement(n, vocabulary, rng) for n in range(size)]
    gc.collect()
    started = time.perf_counter()
    agreements = [parse_agreement(doc, vocabulary, version=1) for doc in documents]
    policy: CompiledPolicy = compile_policy(
        revision=1,
        vocabulary=vocabulary,
        agreements=agreements,
        model_text=MODEL_TEXT,
    )
    compile_seconds = time.perf_counter() - started
    del policy
    gc.collect()
    tracemalloc.start()  # a second compile, measured for memory (tracemalloc slows it)
    policy = compile_policy(
        revision=1,
        vocabulary=vocabulary,
        agreements=[parse_agreement(doc, vocabulary, version=1) for doc in documents],
        model_text=MODEL_TEXT,
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    started = time.perf_counter()
    line_count = len(policy.all_lines())
    expand_seconds = time.perf_counter() - started
    policy = compile_policy(
        revision=2,
        vocabulary=vocabulary,
        agreements=agreements,
        model_text=MODEL_TEXT,
    )  # a fresh policy: evaluation compiles only the pairs it meets
    snapshot = PolicySnapshot.of(policy)  # as a replica holds it: enforcer and memo
    mix = requests_for(agreements, vocabulary, rng)
    timings: dict[str, list[int]] = {"cold": [], "warm": []}
    for phase in ("cold", "warm"):
        for question, facts in mix:
            began = time.perf_counter_ns()
            evaluate(policy, question, facts, NOW, enforcer=snapshot.enforcer, memo=snapshot.memo)
            timings[phase].append(time.perf_counter_ns() - began)
    cold_p50, cold_p99 = _percentiles(timings["cold"])
    warm_p50, warm_p99 = _percentiles(timings["warm"])
    reload = _reload_while_deciding(snapshot, agreements, vocabulary, mix)
    return {
        "agreements": size,
        "casbin_lines": line_count,
        "expand_all_seconds": round(expand_seconds, 2),
        "compile_seconds": round(compile_seconds, 3),
        "compile_peak_mib": round(peak / 2**20, 1),
        "cold_p50_us": round(cold_p50, 1),
        "cold_p99_us": round(cold_p99, 1),
        "warm_p50_us": round(warm_p50, 1),
        "warm_p99_us": round(warm_p99, 1),
        **reload,
    }


def _reload_while_deciding(
    live: PolicySnapshot,
    agreements: list[Agreement],
    vocabulary: Vocabulary,
    mix: list[tuple[Question, PersonFacts]],
) -> dict[str, Any]:
    """Recompile every agreement in a thread, as a replica does on a new revision
    (with the cyclic garbage collector paused, as `LivePolicy.refresh` does it),
    while this thread keeps deciding on the live policy; how many decisions were
    answered meanwhile, and the slowest of them."""
    done = threading.Event()
    reload_seconds = 0.0

    def recompile() -> None:
        nonlocal reload_seconds
        started = time.perf_counter()
        with collector_paused():  # as LivePolicy.refresh compiles
            compile_policy(
                revision=3,
                vocabulary=vocabulary,
                agreements=agreements,
                model_text=MODEL_TEXT,
            )
        reload_seconds = time.perf_counter() - started
        done.set()

    answered, slowest_ns = 0, 0
    thread = threading.Thread(target=recompile)
    thread.start()
    while not done.is_set():
        question, facts = mix[answered % len(mix)]
        began = time.perf_counter_ns()
        evaluate(live.policy, question, facts, NOW, enforcer=live.enforcer, memo=live.memo)
        slowest_ns = max(slowest_ns, time.perf_counter_ns() - began)
        answered += 1
    thread.join()
    return {
        "reload_under_load_seconds": round(reload_seconds, 3),
        "decisions_during_reload": answered,
        "slowest_during_reload_ms": round(slowest_ns / 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10_000])
    args = parser.parse_args()
    vocabulary_doc = generate_vocabulary(random.Random(1))
    results = [measure(size, vocabulary_doc) for size in args.sizes]
    base = results[0]
    for result in results:
        result["warm_p50_vs_smallest"] = round(result["warm_p50_us"] / base["warm_p50_us"], 2)
        result["cold_p50_vs_smallest"] = round(result["cold_p50_us"] / base["cold_p50_us"], 2)
    columns = list(results[0])
    print("  ".join(f"{c:>20}" for c in columns))
    for result in results:
        print("  ".join(f"{result[c]!s:>20}" for c in columns))
    print(json.dumps({"engine": results}))


if __name__ == "__main__":
    main()
