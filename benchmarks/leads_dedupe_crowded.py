"""Duplicates found among many namesakes, per `max_candidates`: what the cap trades.

FEBRL's blocks are small (a few records share a name key), so it cannot show what
comparing only the strongest `max_candidates` candidates costs. Here the stored leads are
those `leads_ingest.py` sends: 32 given names, 60 surnames and 24 cities, so at 20,000
leads a name key holds ~40-100 of them, as for a company with many Marías García. 1,000 of
them come back changed, 250 of each kind:

- `email`: a typo in a surname, another email domain, no phone;
- `phone`: no email, another phone, a typo in the given name;
- `company`: no email, another phone, same names, company and city;
- `city`: no email, no company, another phone, a typo in a surname: only the names and
  the city are left, so the original shares nothing but common name keys.

Each changed lead is looked up as intake would (blocking keys, the strongest candidates,
no sorted-neighbourhood window) in an index of the stored ones; found means the original
ranks first at the merge threshold (merged) or at the review threshold (held for review).

    .venv/bin/python benchmarks/leads_dedupe_crowded.py [--stored 20000] [--caps 200,100,50,20]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from cauce.leads.matching import DedupeSettings, MatchIndex, MatchRecord
from leads_ingest import LeadMaker

KINDS = ("email", "phone", "company", "city")


def record(lead: dict[str, Any]) -> MatchRecord:
    """The match record of a lead body."""
    return MatchRecord(
        email=lead.get("email"),
        phone=lead.get("phone"),
        first_name=lead.get("first_name"),
        last_names=lead.get("last_name"),
        company=lead.get("company"),
        city=lead.get("city"),
        region=lead.get("region"),
        country=lead.get("country"),
    )


def changed(
    stored: list[dict[str, Any]], count: int, seed: int
) -> list[tuple[int, str, dict[str, Any]]]:
    """(original's index, kind, changed copy) for `count` stored leads."""
    rng = random.Random(seed)

    def typo(text: str) -> str:  # two letters after the first swapped
        if len(text) < 4:
            return text
        at = rng.randrange(1, len(text) - 2)
        return text[:at] + text[at + 1] + text[at] + text[at + 2 :]

    out = []
    for n, i in enumerate(rng.sample(range(len(stored)), count)):
        lead, kind = dict(stored[i]), KINDS[n % len(KINDS)]
        other_phone = f"+34 7{n:08d}"
        if kind == "email":
            lead.update(last_name=typo(lead["last_name"]), phone=None)
            lead["email"] = lead["email"].split("@")[0] + "@otro-dominio.es"
        elif kind == "phone":
            lead.update(email=None, phone=other_phone, first_name=typo(lead["first_name"]))
        elif kind == "company":
            lead.update(email=None, phone=other_phone)
        else:
            lead.update(email=None, company=None, phone=other_phone)
            lead["last_name"] = typo(lead["last_name"])
        out.append((i, kind, lead))
    return out


def main() -> None:
    """One row per cap."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--stored", type=int, default=20_000)
    parser.add_argument("--changed", type=int, default=1_000)
    parser.add_argument("--caps", default="200,100,50,20")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    maker = LeadMaker()
    stored = [maker(i) for i in range(args.stored)]
    probes = changed(stored, args.changed, args.seed)
    per_kind = {kind: sum(1 for _, k, _ in probes if k == kind) for kind in KINDS}
    default = DedupeSettings().max_candidates
    print(
        f"{args.stored:,} stored leads, {len(probes):,} changed copies "
        f"({', '.join(f'{n} {k}' for k, n in per_kind.items())}); found: merged / held\n"
    )
    print("| max_candidates | " + " | ".join(KINDS) + " | all | candidates | ms a lookup |")
    print("|---" * (len(KINDS) + 5) + "|")
    for cap in (int(c) for c in args.caps.split(",")):
        settings = DedupeSettings(max_candidates=cap, window=0)
        index = MatchIndex.rebuild(((i, record(s)) for i, s in enumerate(stored)), settings)
        merged = dict.fromkeys(KINDS, 0)
        held = dict.fromkeys(KINDS, 0)
        compared = sum(len(index.candidates(record(lead))) for _, _, lead in probes)
        cpu = time.process_time()
        for original, kind, lead in probes:
            found = index.query(record(lead))
            if found and found[0].id == original:
                held[kind] += 1
                merged[kind] += found[0].is_duplicate
        cpu = time.process_time() - cpu
        cells = [f"{merged[k]} / {held[k]}" for k in KINDS]
        total = f"{sum(merged.values())} / {sum(held.values())}"
        label = f"{cap} (default)" if cap == default else str(cap)
        print(
            f"| {label} | {' | '.join(cells)} | {total} | {compared / len(probes):.0f} | "
            f"{1000 * cpu / len(probes):.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
