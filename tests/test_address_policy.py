"""The address policy: schemes, resolved addresses, and the guard on every connection."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import requests

from core.adapters.address_policy import check_url, guarded_session, public_url, refusal
from core.errors import AddressRefused, DownloadError
from tests.support.http_server import serve_files


@pytest.mark.parametrize("address,reason", [
    ("127.0.0.1", "a loopback address"),
    ("127.8.9.10", "a loopback address"),
    ("::1", "a loopback address"),
    ("10.1.2.3", "a private address"),
    ("172.16.0.9", "a private address"),
    ("192.168.1.1", "a private address"),
    ("fc00::1", "a private address"),
    ("169.254.10.10", "a link-local address"),
    ("fe80::1", "a link-local address"),
    ("169.254.169.254", "a cloud metadata address"),
    ("fd00:ec2::254", "a cloud metadata address"),
    ("::ffff:127.0.0.1", "a loopback address"),
    ("::ffff:169.254.169.254", "a cloud metadata address"),
    ("0.0.0.0", "a private address"),
    ("224.0.0.1", "a multicast address"),
    ("100.64.0.1", "a reserved address"),
])
def test_non_public_addresses_are_refused(address: str, reason: str):
    assert refusal(ipaddress.ip_address(address), allow_private=False) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "151.101.1.69"])
def test_public_addresses_pass(address: str):
    assert refusal(ipaddress.ip_address(address), allow_private=False) is None


def test_allow_private_opens_private_ranges_but_never_metadata_or_multicast():
    for address in ("127.0.0.1", "10.0.0.1", "192.168.0.10", "::1", "169.254.1.1"):
        assert refusal(ipaddress.ip_address(address), allow_private=True) is None
    assert refusal(ipaddress.ip_address("169.254.169.254"), allow_private=True) == "a cloud metadata address"
    assert refusal(ipaddress.ip_address("224.0.0.1"), allow_private=True) == "a multicast address"


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://example.com/a.zip", "gopher://example.com/", "data:text/plain,hi",
    "javascript:alert(1)", "example.com/a.zip", "/etc/passwd", "jar:http://x/y!/z",
])
def test_only_http_https_and_s3_schemes(url: str):
    with pytest.raises(AddressRefused, match="not allowed") as caught:
        check_url(url, allow_private=True)
    assert caught.value.field == "dataset.url"


def test_hosts_are_judged_by_what_they_resolve_to():
    with pytest.raises(AddressRefused, match=r"'localhost' resolves to .*loopback.*ALLOW_PRIVATE_URLS"):
        check_url("http://localhost:8000/a.zip", allow_private=False)
    with pytest.raises(AddressRefused, match="metadata"):
        check_url("http://169.254.169.254/latest/meta-data/", allow_private=True)
    with pytest.raises(AddressRefused, match="loopback"):
        check_url("https://[::1]/a.zip", allow_private=False, field="dataset.files.3.url")
    assert check_url("http://localhost:8000/a.zip", allow_private=True).host == "localhost"
    with pytest.raises(DownloadError, match="cannot resolve host"):
        check_url("http://no-such-host.invalid/a.zip", allow_private=False)
    # s3:// names a bucket, not a host: its endpoint is the operator's setting, not the job's.
    assert check_url("s3://bucket/key.zip", allow_private=False).scheme == "s3"


def test_public_url_drops_signatures_and_credentials():
    assert public_url("https://user:pw@host.example:8443/a/b.zip?X-Amz-Signature=abc#frag") == (
        "https://host.example:8443/a/b.zip"
    )
    assert public_url("s3://bucket/key.zip") == "s3://bucket/key.zip"
    assert public_url("http://[::1]:80/x?y") == "http://[::1]:80/x"


def test_the_guarded_session_checks_at_connect_time(tmp_path: Path):
    """Even a request made without check_url first (a redirect, a changed DNS answer) cannot reach a refused
    address: the connection itself is vetted, and the server never sees a request."""
    (tmp_path / "a.txt").write_text("hi")
    with serve_files(tmp_path) as server:
        with guarded_session(allow_private=False) as strict:
            with pytest.raises(AddressRefused, match=r"127\.0\.0\.1, a loopback address"):
                strict.get(server.url("a.txt"), timeout=5)
            with pytest.raises(AddressRefused):
                strict.get(f"http://localhost:{server.server_address[1]}/a.txt", timeout=5)
        assert server.requests == []
        with guarded_session(allow_private=True) as open_session:
            assert open_session.get(server.url("a.txt"), timeout=5).text == "hi"
        assert len(server.requests) == 1


def test_the_guarded_session_ignores_proxy_environment(monkeypatch, tmp_path: Path):
    """A proxy from the environment would make the check judge the proxy, not the target."""
    monkeypatch.setenv("HTTP_PROXY", "http://10.255.255.1:3128")
    (tmp_path / "a.txt").write_text("direct")
    with serve_files(tmp_path) as server, guarded_session(allow_private=True) as session:
        assert session.get(server.url("a.txt"), timeout=5).text == "direct"
    assert requests.Session().trust_env is True  # a plain session would have used that proxy


@pytest.mark.parametrize("address,reason", [
    ("::127.0.0.1", "a loopback address"),  # IPv4-compatible
    ("::10.0.0.1", "a private address"),
    ("64:ff9b::127.0.0.1", "a loopback address"),  # NAT64
    ("64:ff9b::169.254.169.254", "a cloud metadata address"),
    ("64:ff9b::a00:1", "a private address"),
    ("2002:7f00:1::", "a loopback address"),  # 6to4 of 127.0.0.1
    ("2002:a9fe:a9fe::1", "a cloud metadata address"),  # 6to4 of 169.254.169.254
    ("2002:c0a8:101::", "a private address"),  # 6to4 of 192.168.1.1
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "a loopback address"),  # Teredo, client 127.0.0.1
])
def test_ipv6_forms_that_embed_a_refused_ipv4_address_are_refused(address: str, reason: str):
    said = refusal(ipaddress.ip_address(address), allow_private=False)
    assert said is not None and said.startswith(reason), said
    assert "embedded in" in said


@pytest.mark.parametrize("address", ["64:ff9b::8.8.8.8", "2002:808:808::1", "::8.8.8.8"])
def test_ipv6_forms_that_embed_a_public_ipv4_address_pass(address: str):
    assert refusal(ipaddress.ip_address(address), allow_private=False) is None


def test_embedded_metadata_is_refused_even_when_private_urls_are_allowed():
    assert refusal(ipaddress.ip_address("64:ff9b::169.254.169.254"), allow_private=True).startswith(
        "a cloud metadata address")
    assert refusal(ipaddress.ip_address("::127.0.0.1"), allow_private=True) is None


@pytest.mark.parametrize("host", ["[::127.0.0.1]", "[64:ff9b::7f00:1]", "[2002:7f00:1::]", "[::ffff:7f00:1]"])
def test_a_url_naming_an_embedded_loopback_address_is_refused_before_any_request(host: str):
    with pytest.raises(AddressRefused) as caught:
        check_url(f"http://{host}:8080/dataset.zip", allow_private=False)
    assert caught.value.field == "dataset.url" and "loopback" in caught.value.message
