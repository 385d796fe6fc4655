"""Free-text search (`GET /v1/leads?q=`) is one LIKE over every lead a word: a word is
searched once, one inside another is left out, and more than 8 different words are
refused (96 one-letter words made 99 full scans, 2 s a search at 200k leads)."""

from __future__ import annotations

import httpx

from cauce.leads.repository_lead import search_words


def test_each_word_once_and_none_inside_another() -> None:
    assert sorted(search_words("e a o i e a o i qxjq")) == ["a", "e", "i", "o", "qxjq"]
    assert sorted(search_words("Ana ana ANA a an García garc")) == ["ana", "garcia"]
    assert search_words("") == []
    assert search_words(None) == []


async def test_repeated_and_contained_words_find_what_the_longer_ones_find(
    api: httpx.AsyncClient,
) -> None:
    for email, name in (("ana@tornillos.es", "Ana"), ("luis@tornillos.es", "Luis")):
        assert (
            await api.post("/v1/leads", json={"email": email, "first_name": name})
        ).status_code == 201
    plain = (await api.get("/v1/leads", params={"q": "ana tornillos"})).json()["items"]
    noisy = (
        await api.get("/v1/leads", params={"q": "a an ana tornillos torn a a a a a a a"})
    ).json()
    assert [lead["email"] for lead in plain] == ["ana@tornillos.es"]
    assert noisy["items"] == plain


async def test_more_than_eight_different_words_are_refused(api: httpx.AsyncClient) -> None:
    response = await api.get(
        "/v1/leads", params={"q": "uno dos tres cuatro cinco seis siete ocho nueve"}
    )
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [(e["pointer"], e["type"]) for e in errors] == [("#query/q", "too_many_words")]
    eight = await api.get(
        "/v1/leads", params={"q": "uno dos tres cuatro cinco seis siete ocho ocho"}
    )
    assert eight.status_code == 200
