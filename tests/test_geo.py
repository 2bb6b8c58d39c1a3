import pytest

from millimetric.ingest.geo import country_for_ip


# Addresses whose registration has been stable for many years (public resolvers, RIR and
# NIC infrastructure).
@pytest.mark.parametrize(
    ("ip", "country"),
    [
        ("8.8.8.8", "US"),
        ("9.9.9.9", "US"),
        ("193.0.6.139", "NL"),
        ("200.160.2.3", "BR"),
        ("2001:4860:4860::8888", "US"),
        ("2606:4700:4700::1111", "US"),
        ("::ffff:8.8.8.8", "US"),
        (" 8.8.8.8 ", "US"),
    ],
)
def test_public_addresses(ip, country):
    assert country_for_ip(ip) == country


@pytest.mark.parametrize(
    "ip",
    [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "127.0.0.1",
        "100.64.0.1",
        "169.254.1.1",
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "203.0.113.7",
        "::1",
        "::",
        "fe80::1%eth0",
        "fd00::1",
        "2001:db8::1",
        "::ffff:10.0.0.1",
        "",
        None,
        "garbage",
        "8.8.8.8:80",
        "[2001:4860:4860::8888]",
        "999.1.1.1",
        "8.8.8.8\x00",
        "1" * 10_000,
    ],
)
def test_unlocatable_addresses(ip):
    assert country_for_ip(ip) == ""
