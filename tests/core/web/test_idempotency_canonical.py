"""`Idempotency-Key` compares a JSON body by its value, not its bytes (Stripe compares
parameters): a retry that re-serialises the same JSON replays, another value is refused,
and a key stored as a raw-bytes digest before the change still replays those bytes."""

from __future__ import annotations

import hashlib
import json
import math
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from cauce.app import Resources
from cauce.core.db import unit_of_work
from cauce.core.web.idempotency import IdempotencyRecord, canonical_json, fingerprint
from tests.conftest import SettingsFactory
from tests.leads.api_client import leads_api

KEY = "Idempotency-Key"


def _raw_digest(method: str, path: str, body: bytes) -> str:
    """The fingerprint as stored before it was canonical: a digest of the raw bytes."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


# --- The fingerprint itself -------------------------------------------------------------

# Every JSON value: integers of any size (orjson reads those past 64 bits as floats, the
# standard library exactly), floats of every magnitude, text with non-ASCII characters.
_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**62, max_value=2**66).map(lambda n: n * (-1) ** (n % 2))
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=16,
)
_SPACE = st.text(alphabet=" \t\n\r", max_size=2)


def _spell(value: Any, draw: Callable[[Any], Any]) -> str:
    """`value` as JSON with random spacing, key order, string escapes and number forms."""
    pad: str = draw(_SPACE)
    tail: str = draw(_SPACE)
    if isinstance(value, dict):
        keys = draw(st.permutations(list(value)))
        members = [f"{_spell(k, draw)}:{_spell(value[k], draw)}" for k in keys]
        text = f"{{{','.join(members) or pad}}}"
    elif isinstance(value, list):
        text = f"[{','.join(_spell(item, draw) for item in value) or pad}]"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    elif isinstance(value, float):
        text = repr(value)  # round-trips; "1e+16" may also be written "1E16"
        text = text.replace("e+", "E") if draw(st.booleans()) else text
    else:
        text = json.dumps(value)
    return pad + text + tail


def _print(text: str | bytes, path: str = "/v1/leads") -> str:
    body = text.encode() if isinstance(text, str) else text
    return fingerprint("POST", path, body).value


@given(_VALUES, st.data())
@settings(max_examples=400, deadline=None)
def test_spacing_key_order_and_escapes_never_change_the_fingerprint(
    value: Any, data: st.DataObject
) -> None:
    """Any two spellings of one JSON value give one fingerprint."""
    assert _print(_spell(value, data.draw)) == _print(_spell(value, data.draw))
    assert _print(_spell(value, data.draw)) == _print(json.dumps(value))


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Where `value` holds a number, text, true, false, null or an empty container."""
    if not value and isinstance(value, dict | list):
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    return [path]


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    if isinstance(value, dict):
        return value | {path[0]: _replace(value[path[0]], path[1:], new)}
    i = path[0]
    return [*value[:i], _replace(value[i], path[1:], new), *value[i + 1 :]]


def _at(value: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        value = value[step]
    return value


def _same_leaf(a: Any, b: Any) -> bool:
    """Equal as JSON values the fingerprint keeps apart: 1 is not 1.0, 0.0 not -0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


@given(_VALUES, _LEAVES, st.data())
@settings(max_examples=400, deadline=None)
def test_changing_a_value_changes_the_fingerprint(
    value: Any, new: Any, data: st.DataObject
) -> None:
    """Replacing any one value (by another, or one of another type) is another request;
    so is an integer one more, however large (past 64 bits orjson would read both as one
    float)."""
    path = data.draw(st.sampled_from(_leaves(value)))
    old = _at(value, path)
    if type(old) is int and data.draw(st.booleans()):
        new = old + 1
    if _same_leaf(old, new):
        new = [new]  # still a change: the value wrapped in a list
    changed = _replace(value, path, new)
    assert _print(_spell(changed, data.draw)) != _print(_spell(value, data.draw))


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ('{"n": 18446744073709551616}', '{"n": 18446744073709551617}'),  # orjson: one float
        ('{"n": -9223372036854775809}', '{"n": -9223372036854775810}'),
        ('{"n": 18446744073709551616}', '{"n": 1.8446744073709552e19}'),
        ('{"n": 1}', '{"n": 1.0}'),
        ('{"n": 0.0}', '{"n": -0.0}'),
        ('{"n": 1}', '{"n": "1"}'),
        ('{"a": 1}', '{"a": 1, "b": null}'),
        ("[1, 2]", "[2, 1]"),
    ],
)
def test_different_values_have_different_fingerprints(one: str, other: str) -> None:
    """Integers of any size stay exact, and numbers keep their type."""
    assert _print(one) != _print(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ('{"n": 18446744073709551616, "a": 1}', '{ "a":1,"n" : 18446744073709551616 }'),
        ('{"e": "é"}', '{"e": "\\u00e9"}'),
        ('{"n": 1e2}', '{"n": 100.0}'),
        ('{"n": 0.10000000000000000001}', '{"n": 0.1}'),  # one double
        ('{"s": "\\ud800", "b": 1}', '{"b":1,"s":"\\ud800"}'),  # read by the stdlib only
        ('{"n": NaN, "b": 1}', '{"b":1,"n":NaN}'),
        ("[" * 300 + "]" * 300, " [" * 300 + "] " * 300),  # deeper than orjson writes
    ],
)
def test_one_value_spelt_twice_has_one_fingerprint(one: str, other: str) -> None:
    """Whichever reader takes a body, one value gives one fingerprint."""
    assert _print(one) == _print(other)


def test_a_body_that_is_not_json_is_compared_byte_for_byte() -> None:
    """Not JSON (the endpoints refuse it): the bytes themselves are the fingerprint."""
    assert canonical_json(b'{"a": 1,}') == b'{"a": 1,}'
    assert canonical_json(b"\xff\xfe{}") == b"\xff\xfe{}"
    assert _print(b'{"a": 1,}') != _print(b'{"a":1,}')


def test_the_method_and_path_are_part_of_the_request() -> None:
    """The same body to another endpoint is another request."""
    assert _print("{}", "/v1/leads") != _print("{}", "/v1/leads/batch")
    assert fingerprint("POST", "/x", b"{}").value != fingerprint("PUT", "/x", b"{}").value


def test_a_fingerprint_matches_its_raw_bytes_digest_from_before() -> None:
    """A key stored as the raw bytes' digest (before the change) matches those bytes."""
    body = b'{"b": 1, "a": [1, 2]}'
    print_ = fingerprint("POST", "/v1/leads", body)
    assert print_.value != _raw_digest("POST", "/v1/leads", body)
    assert print_.matches(print_.value)
    assert print_.matches(_raw_digest("POST", "/v1/leads", body))
    assert not print_.matches(_raw_digest("POST", "/v1/leads", b'{"a": [1, 2], "b": 1}'))
    assert not print_.matches(_raw_digest("POST", "/v1/leads/batch", body))


# --- Through the app, on both databases ---------------------------------------------------


def _lead() -> dict[str, Any]:
    return {
        "email": f"{uuid.uuid4().hex[:10]}@construcciones-levante.es",
        "full_name": "María José García",
        "country": "ES",
        "consent": {"marketing": True, "wording_version": "rgpd-2024-03"},
        "custom_fields": {"sector": "construcción", "empleados": 45},
    }


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _respelt(value: Any) -> bytes:
    """The same JSON re-serialised: keys reversed, indented, non-ASCII escaped."""

    def reverse(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: reverse(v[k]) for k in reversed(list(v))}
        if isinstance(v, list):
            return [reverse(item) for item in v]
        return v

    return json.dumps(reverse(value), indent=3).encode()


async def _post(client: httpx.AsyncClient, path: str, body: bytes, key: str) -> httpx.Response:
    headers = {KEY: key, "Content-Type": "application/json"}
    return await client.post(path, content=body, headers=headers)


def _assert_replay(first: httpx.Response, again: httpx.Response) -> None:
    assert "Idempotent-Replayed" not in first.headers
    assert again.status_code == first.status_code, again.text
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"


def _assert_reused(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "idempotency_key_reused"


async def _listed(client: httpx.AsyncClient) -> int:
    return len((await client.get("/v1/leads")).json()["items"])


@pytest.mark.parametrize("group_max", [100, 1], ids=["grouped", "alone"])
async def test_a_lead_sent_again_re_serialised_replays(
    settings_factory: SettingsFactory, group_max: int
) -> None:
    """POST /v1/leads (group commit or alone): other spacing and key order replay the
    first answer; another value under the key is refused; one lead is stored."""
    async with leads_api(settings_factory, intake_group_max=group_max) as (_, client):
        lead = _lead()
        first = await _post(client, "/v1/leads", _compact(lead), "k-1")
        assert first.status_code == 201, first.text
        again = await _post(client, "/v1/leads", _respelt(lead), "k-1")
        _assert_replay(first, again)
        other = lead | {"custom_fields": {"sector": "construcción", "empleados": 46}}
        _assert_reused(await _post(client, "/v1/leads", _respelt(other), "k-1"))
        assert await _listed(client) == 1


async def test_a_batch_sent_again_re_serialised_replays(settings_factory: SettingsFactory) -> None:
    """POST /v1/leads/batch: a re-serialised copy replays; another value (even 45.0 for
    45) is refused; the leads are stored once."""
    async with leads_api(settings_factory) as (_, client):
        batch = {"items": [_lead(), {"email": "not an email"}, _lead()]}
        first = await _post(client, "/v1/leads/batch", _compact(batch), "b-1")
        assert first.status_code == 200, first.text
        assert first.json()["accepted"] == 2
        again = await _post(client, "/v1/leads/batch", _respelt(batch), "b-1")
        _assert_replay(first, again)
        other = {"items": [*batch["items"][:2], batch["items"][2] | {"custom_fields": {}}]}
        _assert_reused(await _post(client, "/v1/leads/batch", _respelt(other), "b-1"))
        floated = _respelt(batch).replace(b'"empleados": 45', b'"empleados": 45.0')
        assert floated != _respelt(batch)
        _assert_reused(await _post(client, "/v1/leads/batch", floated, "b-1"))
        assert await _listed(client) == 2


@pytest.mark.parametrize(
    ("path", "group_max"),
    [("/v1/leads", 100), ("/v1/leads", 1), ("/v1/leads/batch", 100)],
    ids=["lead-grouped", "lead-alone", "batch"],
)
async def test_a_key_stored_as_raw_bytes_still_replays_those_bytes(
    settings_factory: SettingsFactory, path: str, group_max: int
) -> None:
    """A key remembered before the upgrade (a digest of the raw bytes) still replays a
    retry of the very same bytes; a re-serialised copy cannot be told from another
    request then, and is refused as before."""
    async with leads_api(settings_factory, intake_group_max=group_max) as (app, client):
        lead = _lead()
        sent = _respelt({"items": [lead]} if path.endswith("batch") else lead)
        first = await _post(client, path, sent, "old-1")
        assert first.status_code in (200, 201), first.text
        resources: Resources = app.state.resources
        async with unit_of_work(resources.db.sessionmaker) as session:
            await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.key == "old-1")
                .values(fingerprint=_raw_digest("POST", path, sent))
            )
        _assert_replay(first, await _post(client, path, sent, "old-1"))
        _assert_reused(await _post(client, path, _compact(json.loads(sent)), "old-1"))
        assert await _listed(client) == 1
