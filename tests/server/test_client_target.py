"""How the client turns one or several addresses into one load-balanced gRPC target."""

from __future__ import annotations

import pytest

from inference.client import channel_target


def test_single_address_and_dns_names_pass_through() -> None:
    assert channel_target("127.0.0.1:50051") == "127.0.0.1:50051"
    assert channel_target("dns:///inference.internal:50051") == "dns:///inference.internal:50051"


def test_several_addresses_become_a_static_list() -> None:
    assert channel_target("10.0.0.1:1, 10.0.0.2:2") == "ipv4:10.0.0.1:1,10.0.0.2:2"
    assert channel_target(["[::1]:5", "[::2]:6"]) == "ipv6:[::1]:5,[::2]:6"


def test_host_names_are_resolved() -> None:
    assert channel_target("localhost:7,127.0.0.2:8").startswith("ipv4:127.0.0.1:7")


def test_no_address_is_an_error() -> None:
    with pytest.raises(ValueError):
        channel_target(" , ")
