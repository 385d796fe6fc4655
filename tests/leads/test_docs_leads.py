"""docs/leads.md stays true: every example request in it is sent to the real app, in order,
on both databases, and its answer must show what the guide says it shows.

The guide's conventions (see its first section):

- A request is an ```` ```http ```` block starting with a request line (`POST /v1/leads`),
  then headers, a blank line and a body; or a ```` ```sh ```` block running `curl`. The
  next ```` ```http ```` block starting with `HTTP/1.1 <status>` is its answer.
- An answer's headers must be there with those values; a JSON body must contain every
  member shown, with that value (a list has exactly the items shown, unless its last item
  is "…": then those first). A text body (CSV) must match line by line.
- "…" stands for any value (a whole value, a line, or part of a string); `{name}` in an
  answer takes the value found there, and `{name}` in a later request or answer is that
  value. A request body of just "…" is abridged: a tiny body is sent with its headers.
- A ```` ```csv <file> [<encoding>] ```` block is a file a later `curl -F file=@<file>`
  sends. A ```` ```toml ```` block must be valid settings; the one after the comment
  `<!-- doc-test: settings -->` configures the app the examples run on.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from pydantic import BaseModel

from cauce.app import create_app, job_worker_for
from cauce.core.config import Settings
from tests.conftest import SettingsFactory, make_settings
from tests.leads.test_delivery import MemoryCrm

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "leads.md"
ANY = "…"
SETTINGS_MARK = "<!-- doc-test: settings -->"
_BLOCK = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_VAR = re.compile(r"\{([a-z][a-z0-9_]*)\}")
_REQUEST_LINE = re.compile(r"^(GET|POST|PATCH|PUT|DELETE) (/\S*)$")
_STATUS_LINE = re.compile(r"^HTTP/1\.1 (\d{3})\b")


@dataclass
class Block:
    """One fenced block of the guide: its info string, text and line number."""

    info: list[str]
    text: str
    line: int
    marked: bool = False


@dataclass
class Exchange:
    """A request of the guide and the answer it promises."""

    request: Block
    answer: Block


@dataclass
class Guide:
    """The guide's parsed blocks."""

    exchanges: list[Exchange] = field(default_factory=list)
    files: dict[str, tuple[str, str]] = field(default_factory=dict)
    toml: list[Block] = field(default_factory=list)


def _blocks(text: str) -> list[Block]:
    out = []
    for match in _BLOCK.finditer(text):
        before = text[: match.start()]
        marked = before.rstrip().endswith(SETTINGS_MARK)
        out.append(
            Block(match.group(1).split(), match.group(2), before.count("\n") + 1, marked=marked)
        )
    return out


def _is_request(block: Block) -> bool:
    lang = block.info[0] if block.info else ""
    first = block.text.lstrip().split("\n", 1)[0]
    if lang == "http":
        return _REQUEST_LINE.match(first) is not None
    return lang == "sh" and first.startswith("curl ")


def _is_answer(block: Block) -> bool:
    return bool(block.info) and block.info[0] == "http" and bool(_STATUS_LINE.match(block.text))


def parse_guide(text: str) -> Guide:
    """The exchanges, files and settings blocks of the guide, in order."""
    guide = Guide()
    pending: Block | None = None
    for block in _blocks(text):
        lang = block.info[0] if block.info else ""
        if lang == "csv" and len(block.info) >= 2:
            encoding = block.info[2] if len(block.info) > 2 else "utf-8"
            guide.files[block.info[1]] = (block.text, encoding)
        elif lang == "toml":
            guide.toml.append(block)
        elif _is_request(block):
            assert pending is None, f"line {pending.line}: a request without its answer"
            pending = block
        elif _is_answer(block):
            assert pending is not None, f"line {block.line}: an answer without a request"
            guide.exchanges.append(Exchange(pending, block))
            pending = None
    assert pending is None, f"line {pending.line}: a request without its answer"
    return guide


GUIDE_TEXT = GUIDE.read_text(encoding="utf-8")
PARSED = parse_guide(GUIDE_TEXT)


def _app_settings() -> dict[str, Any]:
    marked = [block for block in PARSED.toml if block.marked]
    assert len(marked) == 1, "the guide marks exactly one settings block"
    return tomllib.loads(marked[0].text)


# --- matching ------------------------------------------------------------------------


class Mismatch(AssertionError):
    """The real answer differs from the guide."""


def _pattern(expected: str, variables: dict[str, Any]) -> str:
    """A regex for a string of the guide: "…" is anything, `{name}` a known value or a
    capture."""
    out, seen = [], set()
    for piece in re.split(r"(…|\{[a-z][a-z0-9_]*\})", expected):
        name = piece[1:-1] if _VAR.fullmatch(piece) else None
        if piece == ANY:
            out.append("(?s:.*?)")
        elif name is not None and name in variables:
            out.append(re.escape(str(variables[name])))
        elif name is not None and name in seen:
            out.append(f"(?P={name})")
        elif name is not None:
            seen.add(name)
            out.append(f"(?P<{name}>(?s:.+?))")
        else:
            out.append(re.escape(piece))
    return "".join(out)


def _match_text(expected: str, actual: str, variables: dict[str, Any], where: str) -> None:
    found = re.fullmatch(_pattern(expected, variables), actual)
    if found is None:
        raise Mismatch(f"{where}: expected {expected!r}, got {actual!r}")
    variables.update(found.groupdict())


def match(expected: Any, actual: Any, variables: dict[str, Any], where: str = "body") -> None:
    """Check `actual` shows what `expected` (from the guide) shows; capture `{names}`."""
    if expected == ANY:
        return
    if isinstance(expected, str) and (_VAR.search(expected) or ANY in expected):
        name = expected[1:-1] if _VAR.fullmatch(expected) else None
        if name is not None and name not in variables and not isinstance(actual, str):
            variables[name] = actual
            return
        if not isinstance(actual, str):
            raise Mismatch(f"{where}: expected a string like {expected!r}, got {actual!r}")
        _match_text(expected, actual, variables, where)
    elif isinstance(expected, dict):
        if not isinstance(actual, dict):
            raise Mismatch(f"{where}: expected an object, got {actual!r}")
        for key, value in expected.items():
            if key not in actual:
                raise Mismatch(f"{where}: no member {key!r} in {sorted(actual)}")
            match(value, actual[key], variables, f"{where}/{key}")
    elif isinstance(expected, list):
        if not isinstance(actual, list):
            raise Mismatch(f"{where}: expected a list, got {actual!r}")
        abridged = bool(expected) and expected[-1] == ANY
        shown = expected[:-1] if abridged else expected
        if len(actual) < len(shown) or (not abridged and len(actual) != len(shown)):
            raise Mismatch(f"{where}: expected {len(shown)} items, got {len(actual)}: {actual}")
        for index, item in enumerate(shown):
            match(item, actual[index], variables, f"{where}/{index}")
    elif isinstance(expected, bool) or expected is None or isinstance(actual, bool):
        if expected is not actual:
            raise Mismatch(f"{where}: expected {expected!r}, got {actual!r}")
    elif expected != actual:
        raise Mismatch(f"{where}: expected {expected!r}, got {actual!r}")


# --- requests ------------------------------------------------------------------------


def _substitute(text: str, variables: dict[str, Any], where: str) -> str:
    def value(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in variables:
            raise AssertionError(f"{where}: {{{name}}} is used before an answer gives it")
        return str(variables[name])

    return _VAR.sub(value, text)


def _head_and_body(text: str) -> tuple[list[str], str]:
    head, _, body = text.partition("\n\n")
    return head.strip("\n").split("\n"), body.strip("\n")


def _headers(lines: list[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        name, _, value = line.partition(":")
        out[name.strip()] = value.strip()
    return out


def _http_request(block: Block, variables: dict[str, Any]) -> dict[str, Any]:
    text = _substitute(block.text, variables, f"line {block.line}")
    head, body = _head_and_body(text)
    found = _REQUEST_LINE.match(head[0])
    assert found is not None
    headers = _headers(head[1:])
    headers.pop("Authorization", None)  # the fixture's key
    content = b"{}" if body == ANY else body.encode()
    return {"method": found.group(1), "url": found.group(2), "headers": headers, "content": content}


def _curl_request(block: Block, variables: dict[str, Any]) -> dict[str, Any]:
    text = _substitute(block.text.replace("\\\n", " "), variables, f"line {block.line}")
    words = shlex.split(text)
    method, url = "GET", ""
    headers: dict[str, str] = {}
    files: dict[str, tuple[str, bytes, str]] = {}
    data: dict[str, str] = {}
    index = 1
    while index < len(words):
        word = words[index]
        if word in ("-X", "-H", "-F", "-o"):
            argument = words[index + 1]
            index += 1
            if word == "-X":
                method = argument
            elif word == "-H":
                name, _, value = argument.partition(":")
                headers[name.strip()] = value.strip()
            elif word == "-F":
                method = "POST" if method == "GET" else method
                name, _, value = argument.partition("=")
                if value.startswith("@"):
                    filename = value[1:].split(";", 1)[0]
                    content, encoding = PARSED.files[filename]
                    files[name] = (filename, content.encode(encoding), "text/csv")
                else:
                    data[name] = value
        elif not word.startswith("-"):
            url = word
        index += 1
    headers.pop("Authorization", None)
    path = re.sub(r"^https?://[^/]+", "", url)
    return {
        "method": method,
        "url": path,
        "headers": headers,
        "files": files or None,
        "data": data or None,
    }


def _check_answer(block: Block, response: httpx.Response, variables: dict[str, Any]) -> None:
    where = f"answer at line {block.line} of docs/leads.md"
    head, body = _head_and_body(block.text)
    found = _STATUS_LINE.match(head[0])
    assert found is not None
    if response.status_code != int(found.group(1)):
        raise Mismatch(
            f"{where}: status {response.status_code}, not {found.group(1)}: {response.text}"
        )
    for name, value in _headers(head[1:]).items():
        actual = response.headers.get(name)
        if actual is None:
            raise Mismatch(f"{where}: no header {name}")
        _match_text(value, actual, variables, f"{where}, header {name}")
    if not body:
        return
    if body[0] in "{[":
        try:
            match(json.loads(body), response.json(), variables, where)
        except Mismatch as exc:
            raise Mismatch(f"{exc}\nthe whole answer: {response.text}") from None
        return
    actual = response.text.lstrip("\ufeff").replace("\r\n", "\n").rstrip("\n")
    _match_text(body, actual, variables, where)


# --- the tests -----------------------------------------------------------------------


@pytest.fixture
async def leads_app(settings_factory: SettingsFactory) -> AsyncIterator[FastAPI]:
    """The app on the guide's settings, a CRM at the port, jobs run by the test."""
    settings = settings_factory(
        crm={"provider": "hubspot", "token": "t"},
        jobs={"embedded_worker": False},
        **_app_settings(),
    )
    app = create_app(settings, crm=MemoryCrm())
    async with LifespanManager(app):
        yield app


async def test_every_example_of_the_guide_answers_as_shown(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """Each request of docs/leads.md, sent in order, gets the answer the guide shows."""
    assert len(PARSED.exchanges) >= 20, "the guide lost its examples"
    worker = job_worker_for(leads_app.state.resources)
    variables: dict[str, Any] = {}
    for exchange in PARSED.exchanges:
        block = exchange.request
        is_curl = block.info[0] == "sh"
        sent = (_curl_request if is_curl else _http_request)(block, variables)
        if sent["method"] == "GET":
            await worker.run_until_idle(30)  # what `cauce serve` does meanwhile
        response = await api.request(**sent)
        _check_answer(exchange.answer, response, variables)


def _setting_exists(path: list[str]) -> bool:
    model: type[BaseModel] = Settings
    index = 0
    while index < len(path):
        fields = model.model_fields
        if path[index] not in fields:
            return False
        annotation = fields[path[index]].annotation
        index += 1
        if index == len(path):
            return True
        if get_origin(annotation) is dict:
            index += 1  # a key of the mapping (a team, an upstream)
            inner = get_args(annotation)[-1]
            if index == len(path):
                return True
            if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
                return False
            model = inner
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            return False
    return True


_SECTIONS = "|".join(
    name
    for name, info in Settings.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
)


def test_every_setting_the_guide_names_exists(tmp_path: Path) -> None:
    """`CAUCE_...` variables and `section.setting` names in the guide are real settings,
    and every TOML example loads."""
    named = set(re.findall(r"\bCAUCE_[A-Z0-9_]*[A-Z0-9]", GUIDE_TEXT)) - {"CAUCE_CONFIG"}
    assert named, "the guide names no variable"
    for name in sorted(named):
        path = name.removeprefix("CAUCE_").lower().split("__")
        assert _setting_exists(path), f"docs/leads.md names {name}, which is no setting"
    dotted = set(re.findall(rf"`((?:{_SECTIONS})(?:\.[a-z_]+)+)`", GUIDE_TEXT))
    for name in sorted(dotted):
        assert _setting_exists(name.split(".")), f"docs/leads.md names `{name}`: no setting"
    assert PARSED.toml, "the guide shows its settings"
    for block in PARSED.toml:
        make_settings(tmp_path, **tomllib.loads(block.text))


def test_the_checker_catches_drift() -> None:
    """A changed status, value or header in an answer is a failure, not a pass."""
    variables: dict[str, Any] = {}
    match(
        {"id": "{lead}", "score": 80, "items": [1, ANY]},
        {"id": "a", "score": 80.0, "items": [1, 2]},
        variables,
    )
    assert variables["lead"] == "a"
    for expected, actual in (
        ({"score": 80}, {"score": 95}),
        ({"owner": "Marta Ruiz"}, {"owner": None}),
        ({"flag": False}, {"flag": 0}),
        ({"items": [1]}, {"items": [1, 2]}),
        ({"id": "{lead}"}, {"id": "b"}),
    ):
        with pytest.raises(Mismatch):
            match(expected, actual, variables)
