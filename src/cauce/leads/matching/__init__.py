"""De-duplication of leads: matching (exact keys, fuzzy names), blocking and merge policy.

Pure domain code, no database. The leads service fills a `MatchRecord` per lead, then
either keeps a warm `MatchIndex` (add/remove/query) or stores `blocking_keys` and
`sort_key` in indexed columns, fetches candidates with SQL and scores them with `rank`
(`plan.BatchMatcher` does that for a whole batch at once, as if one lead at a time).
A `MatchDecision` carries the score (a probability), the verdict against the thresholds
in `DedupeSettings`, and per-field evidence that explains it. `merge` folds a duplicate
into the existing lead, filling gaps and never overwriting.
"""

from cauce.leads.matching.blocking import blocking_keys, sort_key
from cauce.leads.matching.compare import MatchDecision, Verdict, compare
from cauce.leads.matching.fields import Evidence, Level
from cauce.leads.matching.index import Match, MatchIndex, rank
from cauce.leads.matching.merge import FieldChange, merge
from cauce.leads.matching.record import MatchRecord, email_key, fold
from cauce.leads.matching.settings import DedupeSettings

__all__ = [
    "DedupeSettings",
    "Evidence",
    "FieldChange",
    "Level",
    "Match",
    "MatchDecision",
    "MatchIndex",
    "MatchRecord",
    "Verdict",
    "blocking_keys",
    "compare",
    "email_key",
    "fold",
    "merge",
    "rank",
    "sort_key",
]
