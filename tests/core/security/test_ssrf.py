"""SSRF guard: the address classifier (property-based), the guard, and the guarded client.

127.0.0.2 stands in for "the public internet" where a test needs a reachable server
that the guard accepts: it is allowlisted, while 127.0.0.1 plays the internal service
an attacker wants to reach.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cauce.core.http import ClientOptions, Request
from cauce.core.resilience import RecordingEvents
from cauce.core.security.ssrf import IPAddress, SsrfGuard, UnsafeUrlError, classify_address
from tests.core.http.conftest import ClientsFactory
from tests.core.http.upstream import Reply, ScriptedResolver, StartServer

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"

BLOCKED_V4 = {
    "0.0.0.0/8": "unspecified",
    "127.0.0.0/8": "loopback",
    "10.0.0.0/8": "private",
    "172.16.0.0/12": "private",
    "192.168.0.0/16": "private",
    "100.64.0.0/10": "shared_address_space",
    "169.254.0.0/16": "link_local",
    "224.0.0.0/4": "multicast",
    "240.0.0.0/4": "reserved",
    "198.18.0.0/15": "benchmarking",
    "192.0.2.0/24": "documentation",
}
BLOCKED_V6 = {
    "fc00::/7": "private",
    "fe80::/10": "link_local",
    "ff00::/8": "multicast",
    "2001:db8::/32": "documentation",
    "::ffff:0:0/96": "ipv4_mapped",
}
METADATA = ["169.254.169.254", "fd00:ec2::254", "168.63.129.16", "100.100.100.200"]

ipv4 = st.integers(min_value=0, max_value=2**32 - 1).map(ipaddress.IPv4Address)
ipv6 = st.integers(min_value=0, max_value=2**128 - 1).map(ipaddress.IPv6Address)


@st.composite
def inside(draw: st.DrawFn, table: dict[str, str]) -> tuple[IPAddress, str]:
    """An address drawn from one of ``table``'s networks, with the reason expected."""
    cidr = draw(st.sampled_from(sorted(table)))
    network = ipaddress.ip_network(cidr)
    offset = draw(st.integers(min_value=0, max_value=network.num_addresses - 1))
    return network[offset], table[cidr]


@given(inside(BLOCKED_V4))
def test_special_ipv4_ranges_are_refused_with_their_reason(case: tuple[IPAddress, str]) -> None:
    """Every address of a special IPv4 range is refused, naming the range."""
    address, reason = case
    assume(address not in {ipaddress.ip_address(m) for m in METADATA})
    assert classify_address(address) == reason


@given(inside(BLOCKED_V6))
def test_special_ipv6_ranges_are_refused_with_their_reason(case: tuple[IPAddress, str]) -> None:
    """Every address of a special IPv6 range is refused, naming the range."""
    address, reason = case
    assume(address not in {ipaddress.ip_address(m) for m in METADATA})
    assert classify_address(address) == reason


@given(ipv4)
def test_ipv4_mapped_and_compatible_forms_are_always_refused(v4: ipaddress.IPv4Address) -> None:
    """::ffff:a.b.c.d is refused whatever a.b.c.d is: it is an IPv4 connection in disguise."""
    mapped = ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + v4.packed)
    assert classify_address(mapped) is not None
    compatible = ipaddress.IPv6Address(b"\x00" * 12 + v4.packed)
    assert classify_address(compatible) is not None


@given(ipv4)
def test_6to4_and_nat64_are_judged_by_the_embedded_ipv4(v4: ipaddress.IPv4Address) -> None:
    """6to4 and NAT64 addresses are refused exactly when the IPv4 inside them is."""
    six_to_four = ipaddress.IPv6Address(b"\x20\x02" + v4.packed + b"\x00" * 10)
    nat64 = ipaddress.IPv6Address(b"\x00\x64\xff\x9b" + b"\x00" * 8 + v4.packed)
    refused = classify_address(v4) is not None
    assert (classify_address(six_to_four) is not None) is refused
    assert (classify_address(nat64) is not None) is refused


@given(st.one_of(ipv4, ipv6))
def test_everything_the_stdlib_calls_non_global_is_refused(address: IPAddress) -> None:
    """The tables are at least as strict as ipaddress's is_global (plus multicast)."""
    if not address.is_global or address.is_multicast:
        assert classify_address(address) is not None


@given(ipv6)
def test_ipv6_outside_global_unicast_is_refused(address: ipaddress.IPv6Address) -> None:
    """Only 2000::/3 (and NAT64 of a public IPv4) may be public."""
    nat64 = ipaddress.ip_network("64:ff9b::/96")
    if address not in ipaddress.ip_network("2000::/3") and address not in nat64:
        assert classify_address(address) is not None


@given(ipv6, st.sampled_from(["eth0", "1"]))
def test_scope_id_does_not_change_the_answer(address: ipaddress.IPv6Address, scope: str) -> None:
    """fe80::1%eth0 is judged as fe80::1."""
    scoped = ipaddress.IPv6Address(f"{address}%{scope}")
    assert classify_address(scoped) == classify_address(address)


def test_public_addresses_pass_and_metadata_is_named() -> None:
    """Ordinary public addresses pass; metadata endpoints say so."""
    assert classify_address(ipaddress.ip_address(PUBLIC_V4)) is None
    assert classify_address(ipaddress.ip_address(PUBLIC_V6)) is None
    for address in METADATA:
        assert classify_address(ipaddress.ip_address(address)) == "cloud_metadata"


async def test_allowlist_admits_cidrs_and_hosts_but_never_metadata() -> None:
    """Allowlisted CIDRs and host names pass; metadata stays refused even inside a CIDR."""
    resolver = ScriptedResolver(["10.1.2.3"])
    guard = SsrfGuard(allow=["127.0.0.0/8", "sandbox.local", "169.254.0.0/16"], resolver=resolver)
    assert await guard.check_url("http://127.0.0.1:8080/hook") == [
        ipaddress.ip_address("127.0.0.1")
    ]
    assert await guard.check_url("https://Sandbox.Local./x") == [ipaddress.ip_address("10.1.2.3")]
    with pytest.raises(UnsafeUrlError) as info:
        await guard.check_url("http://169.254.169.254/latest/meta-data/")
    assert info.value.reason == "cloud_metadata"
    assert (await guard.check_url("http://169.254.1.1/"))[0] == ipaddress.ip_address("169.254.1.1")


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://example.com/", "scheme"),
        ("http://localhost/", "loopback"),
        ("http://api.localhost:9000/", "loopback"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud_metadata"),
        ("http://[::1]/", "loopback"),
        ("http://[::ffff:10.0.0.1]/", "ipv4_mapped"),
        ("http://[fd00:ec2::254]/", "cloud_metadata"),
        ("http:///nohost", "no_host"),
    ],
)
async def test_refused_without_any_lookup(url: str, reason: str) -> None:
    """Schemes, reserved names and IP literals are refused before DNS is asked."""
    resolver = ScriptedResolver([PUBLIC_V4])
    guard = SsrfGuard(resolver=resolver)
    with pytest.raises(UnsafeUrlError) as info:
        await guard.check_url(url)
    assert info.value.reason == reason
    assert resolver.calls == []


async def test_a_name_with_any_private_answer_is_refused() -> None:
    """One private address among public ones refuses the whole name."""
    guard = SsrfGuard(resolver=ScriptedResolver([PUBLIC_V4, "10.0.0.7"]))
    with pytest.raises(UnsafeUrlError) as info:
        await guard.check_url("https://hooks.example.com/x")
    assert info.value.reason == "private"
    assert str(info.value.address) == "10.0.0.7"


@pytest.mark.parametrize("host", ["0x7f000001", "127.1", "2130706433", "0177.0.0.1"])
async def test_legacy_numeric_forms_resolve_to_loopback_and_are_refused(host: str) -> None:
    """inet_aton spellings of 127.0.0.1 are caught after resolution (no network involved)."""
    with pytest.raises(UnsafeUrlError) as info:
        await SsrfGuard().check_url(f"http://{host}/")
    assert info.value.reason == "loopback"


async def test_client_refuses_loopback_without_sending_or_retrying(
    start_server: StartServer, make_clients: ClientsFactory, events: RecordingEvents
) -> None:
    """A guarded client never connects to 127.0.0.1 and makes a single attempt."""
    internal = await start_server()
    clients = make_clients(default_options=ClientOptions(ssrf=SsrfGuard()))
    client = clients.get("webhooks")
    with pytest.raises(UnsafeUrlError):
        await client.send(Request.post(internal.url("/admin"), json={}, idempotency_key="k"))
    assert internal.hits() == 0
    assert len(events.of("attempt")) == 1


async def test_client_reaches_an_allowlisted_sandbox(
    start_server: StartServer, make_clients: ClientsFactory
) -> None:
    """The allowlist lets the local sandbox through."""
    sandbox = await start_server()
    guard = SsrfGuard(allow=["127.0.0.1/32"])
    client = make_clients(default_options=ClientOptions(ssrf=guard)).get("webhooks")
    assert (await client.send(Request.get(sandbox.url("/hook")))).status == 200
    assert sandbox.hits("/hook") == 1


async def test_redirect_to_a_private_address_is_refused(
    start_server: StartServer, make_clients: ClientsFactory
) -> None:
    """A public target that redirects to an internal address is stopped at that hop."""
    public = await start_server(host="127.0.0.2")
    internal = await start_server()
    public.script("/hook", Reply(307, headers={"Location": internal.url("/admin")}))
    guard = SsrfGuard(allow=["127.0.0.2/32"])
    client = make_clients(default_options=ClientOptions(ssrf=guard)).get("webhooks")
    with pytest.raises(UnsafeUrlError) as info:
        await client.send(Request.get(public.url("/hook")))
    assert info.value.reason == "loopback"
    assert public.hits("/hook") == 1
    assert internal.hits() == 0


async def test_redirect_to_a_name_resolving_private_is_refused(
    start_server: StartServer, make_clients: ClientsFactory
) -> None:
    """A redirect to a host name is vetted by DNS answer like the first hop."""
    public = await start_server(host="127.0.0.2")
    internal = await start_server()
    public.script(
        "/hook", Reply(302, headers={"Location": f"http://intranet.example:{internal.port}/"})
    )
    resolver = ScriptedResolver(["127.0.0.1"])
    guard = SsrfGuard(allow=["127.0.0.2/32"], resolver=resolver)
    client = make_clients(default_options=ClientOptions(ssrf=guard)).get("webhooks")
    with pytest.raises(UnsafeUrlError):
        await client.send(Request.get(public.url("/hook")))
    assert resolver.calls == ["intranet.example"]
    assert internal.hits() == 0


async def test_dns_rebinding_after_validation_is_refused(
    start_server: StartServer, make_clients: ClientsFactory
) -> None:
    """Validated as public when saved, rebound to 127.0.0.1 at delivery: the delivery is refused."""
    internal = await start_server()
    resolver = ScriptedResolver(["127.0.0.2"], ["127.0.0.1"])
    guard = SsrfGuard(allow=["127.0.0.2/32"], resolver=resolver)
    url = f"http://rebind.example:{internal.port}/admin"
    assert await guard.check_url(url) == [ipaddress.ip_address("127.0.0.2")]
    client = make_clients(default_options=ClientOptions(ssrf=guard)).get("webhooks")
    with pytest.raises(UnsafeUrlError) as info:
        await client.send(Request.get(url))
    assert info.value.reason == "loopback"
    assert internal.hits() == 0
    assert resolver.calls == ["rebind.example", "rebind.example"]


async def test_the_connection_uses_the_vetted_answer_only(
    start_server: StartServer, make_clients: ClientsFactory
) -> None:
    """A rebinding resolver (public, then 127.0.0.1) is asked once; the vetted address is used."""
    public = await start_server(host="127.0.0.2")
    # The internal service listens on the same port: a second lookup would reach it.
    internal = await start_server(host="127.0.0.1", port=public.port)
    resolver = ScriptedResolver(["127.0.0.2"], ["127.0.0.1"])
    guard = SsrfGuard(allow=["127.0.0.2/32"], resolver=resolver)
    client = make_clients(default_options=ClientOptions(ssrf=guard)).get("webhooks")
    url = f"http://rebind.example:{public.port}/hook"
    for _ in range(3):
        assert (await client.send(Request.get(url))).status == 200
    assert public.hits("/hook") == 3
    assert internal.hits() == 0
    assert resolver.calls == ["rebind.example"]
