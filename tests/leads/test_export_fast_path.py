"""`GET /v1/leads/export.csv` byte for byte as it was before its fast path.

The expectations are literals captured from the export as it was written before (leads
read whole as ORM objects, each cell through `cell_text`, `neutralise_cell` or `as_text`,
and `_quoted`): the rows of a varied set of leads (accents, formula-looking cells, quotes,
newlines and separators, empty fields, custom fields, consent, UTM, identifiers that look
like numbers or dates, held leads, an erased one), the leads each filter gives in order,
and the SHA-256 of exports of a few thousand generated leads (several pages).
"""

from __future__ import annotations

import hashlib
import random
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Table, insert

from cauce.app import Resources
from cauce.leads.models import SEARCHED, Lead, search_text

_T0 = datetime(2026, 1, 5, 9, 30, 0, tzinfo=UTC)


def _uid(n: int) -> str:
    # Hex ids with letters, and a few all digits (which a spreadsheet reads as a number:
    # `as_text` gives them a tab).
    return f"{n:08d}-0000-4000-8000-{n:012d}" if n % 4 == 0 else f"a{n:07x}-bcde-4f00-8000-{n:012x}"


# Every row names the same columns (one INSERT of many rows).
_NULLABLE = (
    "email", "phone", "phone_extension", "first_name", "last_name", "company", "job_title",
    "country", "region", "city", "language", "external_id", "consent", "other_emails",
    "other_phones", "owner", "team", "possible_duplicate_of", "erased_at",
)  # fmt: skip


def _row(n: int, **fields: Any) -> dict[str, Any]:
    """A `leads` row: the columns without a default, then `fields`."""
    at = _T0 + timedelta(hours=n, microseconds=(n * 12345) % 1_000_000)
    row: dict[str, Any] = dict.fromkeys(_NULLABLE) | {
        "id": n,
        "uid": _uid(n),
        "source": "web_form",
        "status": "new",
        "score": 0,
        "score_model": "points",
        "utm": {},
        "custom_fields": {},
        "email_free": False,
        "email_disposable": False,
        "created_at": at,
        "updated_at": at + timedelta(minutes=5),
        "sync_status": "synced",
    }
    row.update(fields)
    searched = " ".join(v for name in SEARCHED if (v := row.get(name)))
    row["search_text"] = search_text(searched)
    return row


def _varied() -> list[dict[str, Any]]:
    """Leads whose every cell a careless fast path could write otherwise."""
    return [
        _row(
            1,
            email="mj.nunez@bodegasnandu.es",
            phone="+34612345678",
            first_name="María José",
            last_name="Núñez Ibáñez",
            company="Bodegas Ñandú, S.L.",
            job_title='Directora "Comercial"',
            country="ES",
            region="Castilla-La Mancha",
            city="Ciudad Real",
            language="es",
            source="web_form",
            external_id="000123",
            phone_extension="007",
            status="qualified",
            owner="Iñaki Etxeberria",
            team="Sur",
            score=87,
            utm={
                "source": "google",
                "medium": "cpc",
                "campaign": '=HYPERLINK("http://x")',
                "term": "vino; tinto",
                "content": 5,
            },
            consent={
                "marketing": True,
                "given_at": "2026-01-01T10:00:00Z",
                "wording_version": "v3",
                "source": "https://bodegasnandu.es/alta",
            },
            custom_fields={
                "sector": "vino",
                "empleados": 40,
                "nota": "línea 1\nlínea 2",
                "lista": [1, "=2"],
                "anidado": {"b": 1, "a": None},
                "año": 2026,
            },
            email_free=True,
            other_emails="mj@gmail.com mjn@hotmail.es",
            other_phones="+34699000111 +34699000222",
        ),
        _row(
            2,
            email="=cmd@x.es",
            phone="-12",
            first_name="=cmd|' /C calc'!A0",
            last_name="+Pérez",
            company="@empresa",
            job_title="-jefe",
            country="MX",
            region="''+dos",
            city="'=ya",
            source="api",
            external_id="=1+1",
            phone_extension="+34",
            owner="@owner",
            team="\tequipo",
            score=0,
            status="new",
            utm={
                "source": "@google",
                "medium": "-",
                "campaign": "+1",
                "term": "\rx",
                "content": "'=y",
            },
            consent={"marketing": False, "given_at": None, "wording_version": "=v", "source": "@s"},
            custom_fields={"=k": "=v", "x": "+1"},
            score_model="=learned",
        ),
        _row(3, source="csv", utm={}, custom_fields={}, consent=None, status="lost", score=12),
        _row(
            4,
            email="contacto.0@gmail.com",
            first_name="María José",
            last_name="Núñez Ibáñez",
            city="Ciudad Real",
            country="ES",
            status="qualified",
            owner="Iñaki Etxeberria",
            sync_status="held",
            possible_duplicate_of=1,
            email_free=True,
            score=41,
        ),
        _row(
            5,
            status="junk",
            source="event",
            erased_at=_T0 + timedelta(days=3),
            utm={},
            custom_fields={},
            consent=None,
        ),
        _row(
            6,
            email="otro@gmail.com",
            first_name="Pepe",
            country="ES",
            sync_status="held",
            possible_duplicate_of=5,
            score=55,
            status="working",
        ),
        _row(
            7,
            email="seamus@obrien.ie",
            first_name=" =espacio",
            last_name="O'Brien",
            company="Calle Mayor; 5",
            job_title='Dice "hola", adiós',
            region="a\tb",
            city="Línea\nDos",
            country="IE",
            owner="Iñaki Etxeberria",
            status="won",
            score=90,
            source="referral",
            consent={"marketing": True},
            custom_fields={"comillas": 'a "b" c', "salto": "x\r\ny", "punto y coma": "a;b"},
            other_emails="  a@b.es   c@d.es ",
        ),
        _row(8, external_id="12/05", phone_extension="0042", country="AR", score=50),
        _row(9, external_id="5E3", phone_extension="12", country="CO", score=51),
        _row(10, external_id="MAR1", phone_extension="0", country="CL", status="won", score=99),
        _row(11, external_id="TRUE", phone_extension="1-ene", country="PE"),
        _row(12, external_id="1234567890123", phone_extension="   ", country="ES"),
        _row(13, external_id="ABC-123", phone_extension="12.5", country="ES", source="chat"),
        _row(14, external_id="Sept 2", phone_extension="(5)", country="ES", source="other"),
        _row(
            15,
            email="consent@empresa.es",
            consent={"marketing": False},
            utm={
                "source": {"x": 1, "a": [2]},
                "medium": ["a", "b"],
                "campaign": True,
                "term": 0,
                "content": 1.5,
            },
            custom_fields={"ñ": 1.25, "b": False, "n": None, "e": "", "big": 10**15},
            external_id="12",
            phone_extension="50%",
        ),
        _row(16, email="vacio@empresa.es", consent={}, utm={"source": ""}, external_id="0"),
        _row(
            17,
            email="zhenya@empresa.ru",
            first_name="Женя",
            last_name="Łukasz Søren",
            company="🍷 Vinos",
            city="São Paulo",
            country="BR",
            language="pt-BR",
            status="won",
            score=100,
            score_model="learned-v3",
            team="Norte",
            external_id="$5",
            phone_extension="1,5",
        ),
        _row(
            18,
            company="\uff1dSUM(A1)",
            first_name="\uff0b34",
            last_name="'",
            region="'''",
            job_title="\tTab",
            city="\rCR",
            owner="\uff20a",
            team="\uff0db",
            external_id="'=x",
            phone_extension="'0",
        ),
        _row(
            19,
            email="tel@empresa.es",
            phone="+34954123456",
            phone_extension="1234567",
            other_phones="+34612345678",
            external_id="1.5",
            created_at=_T0.replace(microsecond=0) + timedelta(days=30),
            updated_at=_T0.replace(microsecond=0) + timedelta(days=31),
        ),
        _row(20, email="falso@empresa.es", external_id="falso", consent={"marketing": None}),
        _row(21, email="ene@empresa.es", external_id="1-ene", phone_extension="10:30"),
        _row(22, email="u@empresa.es", external_id="12345678901", phone_extension="1234567890"),
    ]


# The header, and each live lead's line, captured from the export before its fast path.
HEADERS: dict[str, str] = {
    ",": (
        "id,status,email,phone,first_name,last_name,company,"
        "job_title,country,region,city,source,score,owner,"
        "created_at,external_id,language,is_disposable_email,"
        "is_free_email,utm.source,utm.medium,utm.campaign,"
        "utm.term,utm.content,consent.marketing,consent.given_at,"
        "consent.wording_version,consent.source,custom_fields,"
        "updated_at,other_emails,other_phones,phone_extension,"
        "team,duplicate_of,score_model\r\n"
    ),
    ";": (
        "id;status;email;phone;first_name;last_name;company;"
        "job_title;country;region;city;source;score;owner;"
        "created_at;external_id;language;is_disposable_email;"
        "is_free_email;utm.source;utm.medium;utm.campaign;"
        "utm.term;utm.content;consent.marketing;consent.given_at;"
        "consent.wording_version;consent.source;custom_fields;"
        "updated_at;other_emails;other_phones;phone_extension;"
        "team;duplicate_of;score_model\r\n"
    ),
}
LINES: dict[str, dict[int, str]] = {
    ",": {
        1: (
            "a0000001-bcde-4f00-8000-000000000001,qualified,"
            "mj.nunez@bodegasnandu.es,'+34612345678,María José,"
            'Núñez Ibáñez,"Bodegas Ñandú, S.L.","Directora ""Comercial""",'
            "ES,Castilla-La Mancha,Ciudad Real,web_form,87,"
            "Iñaki Etxeberria,2026-01-05T10:30:00.012345+00:00,"
            '"\t000123",es,false,true,google,cpc,"\'=HYPERLINK(""http://x"")",'
            '"vino; tinto",5,true,2026-01-01T10:00:00Z,v3,'
            'https://bodegasnandu.es/alta,"{""anidado"":{""a"":null,'
            '""b"":1},""año"":2026,""empleados"":40,""lista"":[1,'
            '""=2""],""nota"":""línea 1\\nlínea 2"",""sector"":""vino""}",'
            '2026-01-05T10:35:00.012345+00:00,"mj@gmail.com; mjn@hotmail.es",'
            '"\'+34699000111; +34699000222","\t007",Sur,,points\r\n'
        ),
        2: (
            "a0000002-bcde-4f00-8000-000000000002,new,'=cmd@x.es,"
            "'-12,'=cmd|' /C calc'!A0,'+Pérez,'@empresa,'-jefe,"
            "MX,'''+dos,''=ya,api,0,'@owner,2026-01-05T11:30:00.024690+00:00,"
            "'=1+1,,false,false,'@google,'-,'+1,\"'\rx\",''=y,"
            'false,,\'=v,\'@s,"{""=k"":""=v"",""x"":""+1""}",'
            "2026-01-05T11:35:00.024690+00:00,,,'+34,\"'\tequipo\","
            ",'=learned\r\n"
        ),
        3: (
            "a0000003-bcde-4f00-8000-000000000003,lost,,,,"
            ",,,,,,csv,12,,2026-01-05T12:30:00.037035+00:00,"
            ",,false,false,,,,,,,,,,{},2026-01-05T12:35:00.037035+00:00,"
            ",,,,,points\r\n"
        ),
        4: (
            '"\t00000004-0000-4000-8000-000000000004",qualified,'
            "contacto.0@gmail.com,,María José,Núñez Ibáñez,"
            ",,ES,,Ciudad Real,web_form,41,Iñaki Etxeberria,"
            "2026-01-05T13:30:00.049380+00:00,,,false,true,"
            ",,,,,,,,,{},2026-01-05T13:35:00.049380+00:00,"
            ",,,,a0000001-bcde-4f00-8000-000000000001,points\r\n"
        ),
        6: (
            "a0000006-bcde-4f00-8000-000000000006,working,"
            "otro@gmail.com,,Pepe,,,,ES,,,web_form,55,,2026-01-05T15:30:00.0740"
            "70+00:00,,,false,false,,,,,,,,,,{},2026-01-05T15:35:00.074070+00:0"
            "0,,,,,,points\r\n"
        ),
        7: (
            "a0000007-bcde-4f00-8000-000000000007,won,seamus@obrien.ie,"
            ', =espacio,O\'Brien,"Calle Mayor; 5","Dice ""hola"",'
            ' adiós",IE,"a\tb","Línea\nDos",referral,90,Iñaki Etxeberria,'
            "2026-01-05T16:30:00.086415+00:00,,,false,false,"
            ',,,,,true,,,,"{""comillas"":""a \\""b\\"" c"",""punto y coma"":""a;b'
            '"",""salto"":""x\\r\\ny""}",2026-01-05T16:35:00.086415+00:00,'
            '"a@b.es; c@d.es",,,,,points\r\n'
        ),
        8: (
            '"\t00000008-0000-4000-8000-000000000008",new,,'
            ",,,,,AR,,,web_form,50,,2026-01-05T17:30:00.098760+00:00,"
            '"\t12/05",,false,false,,,,,,,,,,{},2026-01-05T17:35:00.098760+00:00'
            ',,,"\t0042",,,points\r\n'
        ),
        9: (
            "a0000009-bcde-4f00-8000-000000000009,new,,,,,"
            ",,CO,,,web_form,51,,2026-01-05T18:30:00.111105+00:00,"
            '"\t5E3",,false,false,,,,,,,,,,{},2026-01-05T18:35:00.111105+00:00,'
            ",,12,,,points\r\n"
        ),
        10: (
            "a000000a-bcde-4f00-8000-00000000000a,won,,,,,"
            ",,CL,,,web_form,99,,2026-01-05T19:30:00.123450+00:00,"
            '"\tMAR1",,false,false,,,,,,,,,,{},2026-01-05T19:35:00.123450+00:00,'
            ",,0,,,points\r\n"
        ),
        11: (
            "a000000b-bcde-4f00-8000-00000000000b,new,,,,,"
            ",,PE,,,web_form,0,,2026-01-05T20:30:00.135795+00:00,"
            '"\tTRUE",,false,false,,,,,,,,,,{},2026-01-05T20:35:00.135795+00:00,'
            ',,"\t1-ene",,,points\r\n'
        ),
        12: (
            '"\t00000012-0000-4000-8000-000000000012",new,,'
            ",,,,,ES,,,web_form,0,,2026-01-05T21:30:00.148140+00:00,"
            '"\t1234567890123",,false,false,,,,,,,,,,{},2026-01-05T21:35:00.1481'
            "40+00:00,,,   ,,,points\r\n"
        ),
        13: (
            "a000000d-bcde-4f00-8000-00000000000d,new,,,,,"
            ",,ES,,,chat,0,,2026-01-05T22:30:00.160485+00:00,"
            "ABC-123,,false,false,,,,,,,,,,{},2026-01-05T22:35:00.160485+00:00,"
            ',,"\t12.5",,,points\r\n'
        ),
        14: (
            "a000000e-bcde-4f00-8000-00000000000e,new,,,,,"
            ",,ES,,,other,0,,2026-01-05T23:30:00.172830+00:00,"
            '"\tSept 2",,false,false,,,,,,,,,,{},2026-01-05T23:35:00.172830+00:0'
            '0,,,"\t(5)",,,points\r\n'
        ),
        15: (
            "a000000f-bcde-4f00-8000-00000000000f,new,consent@empresa.es,"
            ",,,,,,,,web_form,0,,2026-01-06T00:30:00.185175+00:00,"
            '12,,false,false,"{""a"":[2],""x"":1}","[""a"",'
            '""b""]",true,0,1.5,false,,,,"{""b"":false,""big"":1000000000000000'
            ',""e"":"""",""n"":null,""ñ"":1.25}",2026-01-06T00:35:00.185175+00:'
            '00,,,"\t50%",,,points\r\n'
        ),
        16: (
            '"\t00000016-0000-4000-8000-000000000016",new,vacio@empresa.es,'
            ",,,,,,,,web_form,0,,2026-01-06T01:30:00.197520+00:00,"
            "0,,false,false,,,,,,,,,,{},2026-01-06T01:35:00.197520+00:00,"
            ",,,,,points\r\n"
        ),
        17: (
            "a0000011-bcde-4f00-8000-000000000011,won,zhenya@empresa.ru,"
            ",Женя,Łukasz Søren,🍷 Vinos,,BR,,São Paulo,web_form,"
            '100,,2026-01-06T02:30:00.209865+00:00,"\t$5",pt-BR,'
            "false,false,,,,,,,,,,{},2026-01-06T02:35:00.209865+00:00,"
            ',,"\t1,5",Norte,,learned-v3\r\n'
        ),
        18: (
            "a0000012-bcde-4f00-8000-000000000012,new,,,'\uff0b34,"
            "','\uff1dSUM(A1),\"'\tTab\",,''',\"'\rCR\",web_form,0,'\uff20a,"
            "2026-01-06T03:30:00.222210+00:00,''=x,,false,"
            "false,,,,,,,,,,{},2026-01-06T03:35:00.222210+00:00,"
            ",,'0,'\uff0db,,points\r\n"
        ),
        19: (
            "a0000013-bcde-4f00-8000-000000000013,new,tel@empresa.es,"
            "'+34954123456,,,,,,,,web_form,0,,2026-02-04T09:30:00+00:00,"
            '"\t1.5",,false,false,,,,,,,,,,{},2026-02-05T09:30:00+00:00,'
            ",'+34612345678,1234567,,,points\r\n"
        ),
        20: (
            '"\t00000020-0000-4000-8000-000000000020",new,falso@empresa.es,'
            ",,,,,,,,web_form,0,,2026-01-06T05:30:00.246900+00:00,"
            '"\tfalso",,false,false,,,,,,,,,,{},2026-01-06T05:35:00.246900+00:00'
            ",,,,,,points\r\n"
        ),
        21: (
            "a0000015-bcde-4f00-8000-000000000015,new,ene@empresa.es,"
            ",,,,,,,,web_form,0,,2026-01-06T06:30:00.259245+00:00,"
            '"\t1-ene",,false,false,,,,,,,,,,{},2026-01-06T06:35:00.259245+00:00'
            ',,,"\t10:30",,,points\r\n'
        ),
        22: (
            "a0000016-bcde-4f00-8000-000000000016,new,u@empresa.es,"
            ",,,,,,,,web_form,0,,2026-01-06T07:30:00.271590+00:00,"
            "12345678901,,false,false,,,,,,,,,,{},2026-01-06T07:35:00.271590+00"
            ":00,,,1234567890,,,points\r\n"
        ),
    },
    ";": {
        1: (
            "a0000001-bcde-4f00-8000-000000000001;qualified;"
            "mj.nunez@bodegasnandu.es;'+34612345678;María José;"
            'Núñez Ibáñez;"Bodegas Ñandú, S.L.";"Directora ""Comercial""";'
            "ES;Castilla-La Mancha;Ciudad Real;web_form;87;"
            "Iñaki Etxeberria;2026-01-05T10:30:00.012345+00:00;"
            '"\t000123";es;false;true;google;cpc;"\'=HYPERLINK(""http://x"")";'
            '"vino; tinto";5;true;2026-01-01T10:00:00Z;v3;'
            'https://bodegasnandu.es/alta;"{""anidado"":{""a"":null,""b"":1},""'
            'año"":2026,""empleados"":40,""lista"":[1,""=2""],""nota"":""línea '
            '1\\nlínea 2"",""sector"":""vino""}";2026-01-05T10:35:00.012345+00:0'
            '0;"mj@gmail.com; mjn@hotmail.es";"\'+34699000111;'
            ' +34699000222";"\t007";Sur;;points\r\n'
        ),
        2: (
            "a0000002-bcde-4f00-8000-000000000002;new;'=cmd@x.es;"
            "'-12;'=cmd|' /C calc'!A0;'+Pérez;'@empresa;'-jefe;"
            "MX;'''+dos;''=ya;api;0;'@owner;2026-01-05T11:30:00.024690+00:00;"
            "'=1+1;;false;false;'@google;'-;'+1;\"'\rx\";''=y;"
            'false;;\'=v;\'@s;"{""=k"":""=v"",""x"":""+1""}";'
            "2026-01-05T11:35:00.024690+00:00;;;'+34;\"'\tequipo\";"
            ";'=learned\r\n"
        ),
        3: (
            "a0000003-bcde-4f00-8000-000000000003;lost;;;;"
            ";;;;;;csv;12;;2026-01-05T12:30:00.037035+00:00;"
            ";;false;false;;;;;;;;;;{};2026-01-05T12:35:00.037035+00:00;"
            ";;;;;points\r\n"
        ),
        4: (
            '"\t00000004-0000-4000-8000-000000000004";qualified;'
            "contacto.0@gmail.com;;María José;Núñez Ibáñez;"
            ";;ES;;Ciudad Real;web_form;41;Iñaki Etxeberria;"
            "2026-01-05T13:30:00.049380+00:00;;;false;true;"
            ";;;;;;;;;{};2026-01-05T13:35:00.049380+00:00;"
            ";;;;a0000001-bcde-4f00-8000-000000000001;points\r\n"
        ),
        6: (
            "a0000006-bcde-4f00-8000-000000000006;working;"
            "otro@gmail.com;;Pepe;;;;ES;;;web_form;55;;2026-01-05T15:30:00.0740"
            "70+00:00;;;false;false;;;;;;;;;;{};2026-01-05T15:35:00.074070+00:0"
            "0;;;;;;points\r\n"
        ),
        7: (
            "a0000007-bcde-4f00-8000-000000000007;won;seamus@obrien.ie;"
            '; =espacio;O\'Brien;"Calle Mayor; 5";"Dice ""hola"", adiós";'
            'IE;"a\tb";"Línea\nDos";referral;90;Iñaki Etxeberria;'
            "2026-01-05T16:30:00.086415+00:00;;;false;false;"
            ';;;;;true;;;;"{""comillas"":""a \\""b\\"" c"",""punto y coma"":""a;'
            'b"",""salto"":""x\\r\\ny""}";2026-01-05T16:35:00.086415+00:00;'
            '"a@b.es; c@d.es";;;;;points\r\n'
        ),
        8: (
            '"\t00000008-0000-4000-8000-000000000008";new;;'
            ";;;;;AR;;;web_form;50;;2026-01-05T17:30:00.098760+00:00;"
            '"\t12/05";;false;false;;;;;;;;;;{};2026-01-05T17:35:00.098760+00:00'
            ';;;"\t0042";;;points\r\n'
        ),
        9: (
            "a0000009-bcde-4f00-8000-000000000009;new;;;;;"
            ";;CO;;;web_form;51;;2026-01-05T18:30:00.111105+00:00;"
            '"\t5E3";;false;false;;;;;;;;;;{};2026-01-05T18:35:00.111105+00:00;'
            ";;12;;;points\r\n"
        ),
        10: (
            "a000000a-bcde-4f00-8000-00000000000a;won;;;;;"
            ";;CL;;;web_form;99;;2026-01-05T19:30:00.123450+00:00;"
            '"\tMAR1";;false;false;;;;;;;;;;{};2026-01-05T19:35:00.123450+00:00;'
            ";;0;;;points\r\n"
        ),
        11: (
            "a000000b-bcde-4f00-8000-00000000000b;new;;;;;"
            ";;PE;;;web_form;0;;2026-01-05T20:30:00.135795+00:00;"
            '"\tTRUE";;false;false;;;;;;;;;;{};2026-01-05T20:35:00.135795+00:00;'
            ';;"\t1-ene";;;points\r\n'
        ),
        12: (
            '"\t00000012-0000-4000-8000-000000000012";new;;'
            ";;;;;ES;;;web_form;0;;2026-01-05T21:30:00.148140+00:00;"
            '"\t1234567890123";;false;false;;;;;;;;;;{};2026-01-05T21:35:00.1481'
            "40+00:00;;;   ;;;points\r\n"
        ),
        13: (
            "a000000d-bcde-4f00-8000-00000000000d;new;;;;;"
            ";;ES;;;chat;0;;2026-01-05T22:30:00.160485+00:00;"
            "ABC-123;;false;false;;;;;;;;;;{};2026-01-05T22:35:00.160485+00:00;"
            ';;"\t12.5";;;points\r\n'
        ),
        14: (
            "a000000e-bcde-4f00-8000-00000000000e;new;;;;;"
            ";;ES;;;other;0;;2026-01-05T23:30:00.172830+00:00;"
            '"\tSept 2";;false;false;;;;;;;;;;{};2026-01-05T23:35:00.172830+00:0'
            '0;;;"\t(5)";;;points\r\n'
        ),
        15: (
            "a000000f-bcde-4f00-8000-00000000000f;new;consent@empresa.es;"
            ";;;;;;;;web_form;0;;2026-01-06T00:30:00.185175+00:00;"
            '12;;false;false;"{""a"":[2],""x"":1}";"[""a"",""b""]";'
            'true;0;1.5;false;;;;"{""b"":false,""big"":1000000000000000,""e"":"'
            '""",""n"":null,""ñ"":1.25}";2026-01-06T00:35:00.185175+00:00;'
            ';;"\t50%";;;points\r\n'
        ),
        16: (
            '"\t00000016-0000-4000-8000-000000000016";new;vacio@empresa.es;'
            ";;;;;;;;web_form;0;;2026-01-06T01:30:00.197520+00:00;"
            "0;;false;false;;;;;;;;;;{};2026-01-06T01:35:00.197520+00:00;"
            ";;;;;points\r\n"
        ),
        17: (
            "a0000011-bcde-4f00-8000-000000000011;won;zhenya@empresa.ru;"
            ";Женя;Łukasz Søren;🍷 Vinos;;BR;;São Paulo;web_form;"
            '100;;2026-01-06T02:30:00.209865+00:00;"\t$5";pt-BR;'
            "false;false;;;;;;;;;;{};2026-01-06T02:35:00.209865+00:00;"
            ';;"\t1,5";Norte;;learned-v3\r\n'
        ),
        18: (
            "a0000012-bcde-4f00-8000-000000000012;new;;;'\uff0b34;"
            "';'\uff1dSUM(A1);\"'\tTab\";;''';\"'\rCR\";web_form;0;'\uff20a;"
            "2026-01-06T03:30:00.222210+00:00;''=x;;false;"
            "false;;;;;;;;;;{};2026-01-06T03:35:00.222210+00:00;"
            ";;'0;'\uff0db;;points\r\n"
        ),
        19: (
            "a0000013-bcde-4f00-8000-000000000013;new;tel@empresa.es;"
            "'+34954123456;;;;;;;;web_form;0;;2026-02-04T09:30:00+00:00;"
            '"\t1.5";;false;false;;;;;;;;;;{};2026-02-05T09:30:00+00:00;'
            ";'+34612345678;1234567;;;points\r\n"
        ),
        20: (
            '"\t00000020-0000-4000-8000-000000000020";new;falso@empresa.es;'
            ";;;;;;;;web_form;0;;2026-01-06T05:30:00.246900+00:00;"
            '"\tfalso";;false;false;;;;;;;;;;{};2026-01-06T05:35:00.246900+00:00'
            ";;;;;;points\r\n"
        ),
        21: (
            "a0000015-bcde-4f00-8000-000000000015;new;ene@empresa.es;"
            ";;;;;;;;web_form;0;;2026-01-06T06:30:00.259245+00:00;"
            '"\t1-ene";;false;false;;;;;;;;;;{};2026-01-06T06:35:00.259245+00:00'
            ';;;"\t10:30";;;points\r\n'
        ),
        22: (
            "a0000016-bcde-4f00-8000-000000000016;new;u@empresa.es;"
            ";;;;;;;;web_form;0;;2026-01-06T07:30:00.271590+00:00;"
            "12345678901;;false;false;;;;;;;;;;{};2026-01-06T07:35:00.271590+00"
            ":00;;;1234567890;;;points\r\n"
        ),
    },
}
# The leads each search gives, in order (by `_row` number).
SEARCHES: list[tuple[dict[str, str], list[int]]] = [
    ({}, [22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 4, 3, 2, 1]),
    (
        {"order": "oldest"},
        [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22],
    ),
    (
        {"delimiter": ";", "order": "oldest"},
        [1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22],
    ),
    ({"status": "won"}, [17, 10, 7]),
    ({"status": "qualified", "delimiter": ";"}, [4, 1]),
    ({"source": "csv"}, [3]),
    ({"source": "api"}, [2]),
    ({"owner": "Iñaki Etxeberria"}, [7, 4, 1]),
    ({"owner": "In\u0303aki Etxeberria"}, [7, 4, 1]),
    ({"country": "es"}, [14, 13, 12, 6, 4, 1]),
    ({"country": "ES", "status": "new", "order": "oldest"}, [12, 13, 14]),
    (
        {"created_after": "2026-01-05T12:00:00Z", "created_before": "2026-01-05T20:00:00Z"},
        [10, 9, 8, 7, 6, 4, 3],
    ),
    ({"created_after": "2026-02-01"}, [19]),
    ({"min_score": "50", "max_score": "90"}, [9, 8, 7, 6, 1]),
    ({"min_score": "100"}, [17]),
    ({"q": "nunez"}, [4, 1]),
    ({"q": "NÚÑEZ ibáñez"}, [4, 1]),
    ({"q": "612 345 678"}, [19, 1]),
    ({"q": "Женя"}, [17]),
    ({"q": "zzqxj"}, []),
    ({"held": "true"}, [6, 4]),
    ({"held": "false"}, [22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 3, 2, 1]),
    ({"held": "true", "order": "oldest"}, [4, 6]),
    ({"consent_marketing": "true"}, [7, 1]),
    ({"consent_marketing": "false"}, [15, 2]),
    (
        {"consent_marketing": "none"},
        [22, 21, 20, 19, 18, 17, 16, 14, 13, 12, 11, 10, 9, 8, 6, 4, 3],
    ),
    ({"consent_marketing": "none", "country": "ES", "delimiter": ";"}, [14, 13, 12, 6, 4]),
]


def _expected_from(
    headers: dict[str, str], lines: dict[str, dict[int, str]], delimiter: str, numbers: list[int]
) -> bytes:
    rows = lines[delimiter]
    return ("\ufeff" + headers[delimiter] + "".join(rows[n] for n in numbers)).encode()


def _expected(delimiter: str, numbers: list[int]) -> bytes:
    """The export of the `_varied` leads `numbers`, in that order, as it was."""
    return _expected_from(HEADERS, LINES, delimiter, numbers)


async def _insert(app: FastAPI, rows: list[dict[str, Any]]) -> None:
    resources: Resources = app.state.resources
    async with resources.db.engine.begin() as conn:
        for at in range(0, len(rows), 1000):
            await conn.execute(insert(cast(Table, Lead.__table__)), rows[at : at + 1000])


async def _export(api: httpx.AsyncClient, params: dict[str, str]) -> bytes:
    response = await api.get("/v1/leads/export.csv", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    return response.content


@pytest.mark.parametrize("delimiter", [",", ";"])
async def test_every_cell_is_written_as_before(
    leads_app: FastAPI, api: httpx.AsyncClient, delimiter: str
) -> None:
    """Each live lead's line, with either delimiter, is the one the export wrote before
    (erased leads left out, held ones naming the live lead they are held against)."""
    await _insert(leads_app, _varied())
    newest_first = [n for n in range(22, 0, -1) if n != 5]
    assert await _export(api, {"delimiter": delimiter}) == _expected(delimiter, newest_first)


async def test_each_search_exports_the_leads_it_did(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """Every filter, alone and combined, exports the leads (and lines) it did, in order."""
    await _insert(leads_app, _varied())
    for params, numbers in SEARCHES:
        delimiter = params.get("delimiter", ",")
        assert await _export(api, params) == _expected(delimiter, numbers), params


async def test_no_lead_is_a_header_alone(api: httpx.AsyncClient) -> None:
    """An export matching no lead is the BOM and the header."""
    assert await _export(api, {}) == _expected(",", [])
    assert await _export(api, {"status": "won", "delimiter": ";"}) == _expected(";", [])


_POOL: tuple[str | None, ...] = (
    None, "", "Ana", "José Luis", "Núñez", "=1+1", "+34612345678", "-3", "@x", "'=x", "''", "a,b",
    "a;b", 'di "no"', "x\ny", "\tz", "\r", "  ", "000123", "12/05", "5E3", "MAR1", "TRUE", "12",
    "\uff1d1", "Ñandú, S.L.", "São Paulo", "Женя", "🍷", "1-ene", "50%", "(5)", "$5", "0",
)  # fmt: skip
_TEXT = ("first_name", "last_name", "company", "job_title", "region", "city", "owner", "team")


def _generated(n: int) -> list[dict[str, Any]]:
    """`n` leads drawn from `_POOL` (a few held, a few erased), the same every run."""
    rng = random.Random(20260105)
    statuses = ("new", "working", "qualified", "won", "lost", "junk")
    sources = ("web_form", "api", "csv", "crm", "event", "referral")
    rows = []
    for i in range(1, n + 1):
        fields: dict[str, Any] = {name: rng.choice(_POOL) for name in _TEXT}
        pick = rng.choice
        fields.update(
            email=pick((None, f"u{i}@empresa.es", f"=u{i}@x.es")),
            phone=pick((None, f"+3461{i:07d}", f"6{i:08d}")),
            country=pick((None, "ES", "MX", "AR")),
            language=pick((None, "es", "pt")),
            external_id=pick(_POOL) if rng.random() < 0.5 else None,
            phone_extension=(pick(_POOL) or "")[:10] or None,
            status=pick(statuses),
            source=pick(sources),
            score=rng.randrange(101),
            utm=pick(({}, {"source": pick(_POOL), "campaign": "q3"}, {"medium": 5, "term": [1]})),
            consent=pick(
                (
                    None,
                    {},
                    {"marketing": True, "given_at": "2026-01-01T00:00:00+00:00"},
                    {"marketing": False, "source": pick(_POOL), "wording_version": "v1"},
                )
            ),
            custom_fields=pick(({}, {"a": pick(_POOL)}, {"z": 1, "a": {"b": [pick(_POOL)]}})),
            email_free=rng.random() < 0.3,
            email_disposable=rng.random() < 0.05,
            other_emails=pick((None, "", "a@b.es", " a@b.es  =c@d.es ")),
            other_phones=pick((None, "+34699000111", "+34699000111 +34699000222")),
            score_model=pick(("points", "learned-v2")),
        )
        if i > 5 and rng.random() < 0.05:
            fields.update(sync_status="held", possible_duplicate_of=rng.randrange(1, i))
        if rng.random() < 0.03:
            fields["erased_at"] = _T0
        if rng.random() < 0.1:
            fields["created_at"] = _T0.replace(microsecond=0) + timedelta(minutes=i)
        rows.append(_row(i, **fields))
    for row in rows:  # the owner filter reads owners composed
        if row["owner"]:
            row["owner"] = unicodedata.normalize("NFC", row["owner"])
    return rows


# SHA-256 and line count of the export of `_generated(2345)`, per query, as before.
DIGESTS: list[tuple[dict[str, str], int, str]] = [
    ({}, 2275, "abb44fb15d3ca319a320207b3cbf7ec96d25f70ec28d617bf4728630e4eeae33"),
    (
        {"delimiter": ";", "order": "oldest"},
        2275,
        "a454e03289c825528f1bee6607b262eed978a1174935d3c8fec3aacd79bc9be2",
    ),
    (
        {"held": "false", "country": "ES"},
        545,
        "bec0bd9d4fd96e9dd168d877eb07f73853d4381c2b802941fb9bfd9d4d984e99",
    ),
    (
        {"status": "won", "min_score": "30"},
        225,
        "4d51b68c4b2beabef80c5382031b2826bda0a5d8215470420f2eac5217ce20da",
    ),
    ({"held": "true"}, 93, "d60e957d709f14480f9ce9b2dc03b0888684b25a4fa12108389d5045c1b8c732"),
]


async def test_many_leads_over_several_pages_are_written_as_before(
    leads_app: FastAPI, api: httpx.AsyncClient
) -> None:
    """A few thousand generated leads, over several pages, export the same bytes (whole,
    in `;`, oldest first, filtered)."""
    await _insert(leads_app, _generated(2345))
    for params, lines, digest in DIGESTS:
        data = await _export(api, params)
        assert (data.count(b"\r\n"), hashlib.sha256(data).hexdigest()) == (lines, digest), params
