"""Port mapping without a network: the PCP, NAT-PMP, SSDP and IGD codecs, fuzzed, and the config."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from irohpy.errors import PortMapError, PortMapRefused
from irohpy.portmapper import PortmapperConfig, gateway, igd, natpmp, pcp, ssdp
from irohpy.portmapper.config import ENV

NONCE = bytes(range(12))
V4_MAPPED = ipaddress.IPv6Address("::ffff:203.0.113.21").packed


def pcp_map_answer(result: int = 0, lifetime: int = 3600, nonce: bytes = NONCE, port: int = 4000,
                   external: int = 4001, options: bytes = b"") -> bytes:
    return (struct.pack("!BBBBII12x", 2, 0x81, 0, result, lifetime, 7)
            + struct.pack("!12sB3xHH16s", nonce, 17, port, external, V4_MAPPED) + options)


def test_natpmp_requests_and_answers() -> None:
    assert natpmp.external_address_request() == b"\x00\x00"
    assert natpmp.map_request(4000, 0, 7200) == struct.pack("!BBHHHI", 0, 1, 0, 4000, 0, 7200)
    answer = natpmp.parse_external_address(struct.pack("!BBHI4s", 0, 128, 0, 5, bytes([203, 0, 113, 21])))
    assert (answer.ip, answer.epoch) == ("203.0.113.21", 5)
    mapped = natpmp.parse_map(struct.pack("!BBHIHHI", 0, 129, 0, 5, 4000, 4001, 7200))
    assert (mapped.internal_port, mapped.external_port, mapped.lifetime) == (4000, 4001, 7200)
    with pytest.raises(PortMapRefused) as refused:
        natpmp.parse_map(struct.pack("!BBHI", 0, 129, 2, 5))
    assert refused.value.code == 2
    with pytest.raises(PortMapError, match="not usable"):
        natpmp.parse_external_address(struct.pack("!BBHI4s", 0, 128, 0, 5, bytes(4)))
    with pytest.raises(PortMapError):
        natpmp.parse_map(struct.pack("!BBHIHHI", 0, 130, 0, 5, 4000, 4001, 7200))  # TCP, not ours


def test_pcp_requests_and_answers() -> None:
    announce = pcp.announce_request("198.51.100.2")
    assert len(announce) == 24 and announce[:2] == b"\x02\x00"
    assert announce[8:] == ipaddress.IPv6Address("::ffff:198.51.100.2").packed
    request = pcp.map_request(NONCE, "198.51.100.2", 4000, 3600)
    assert len(request) == 60 and request[1] == 1 and request[24:36] == NONCE and request[36] == 17
    answer = pcp.parse(pcp_map_answer(options=b"\x80\x00\x00\x04abcd"))
    assert isinstance(answer, pcp.MapAnswer)
    assert (answer.nonce, answer.internal_port, answer.external_port, answer.external_ip, answer.lifetime) == (
        NONCE, 4000, 4001, "203.0.113.21", 3600)
    assert pcp.parse(struct.pack("!BBBBII12x", 2, 0x80, 0, 0, 0, 9)).epoch == 9
    with pytest.raises(PortMapRefused) as refused:
        pcp.parse(pcp_map_answer(result=8))
    assert refused.value.code == 8
    with pytest.raises(PortMapRefused, match="NAT-PMP gateway"):
        pcp.parse(struct.pack("!BBHI", 0, 129, 1, 0))
    with pytest.raises(PortMapError, match="option"):
        pcp.parse(pcp_map_answer(options=b"\x80\x00\x00\x10abcd"))
    with pytest.raises(ValueError):
        pcp.map_request(b"short", "198.51.100.2", 4000)


def test_ssdp_answer_must_point_at_the_answering_gateway() -> None:
    assert b"ssdp:discover" in ssdp.m_search() and b"239.255.255.250:1900" in ssdp.m_search()
    answer = (b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: " + ssdp.IGD_V1.encode()
              + b"\r\nLOCATION: http://198.51.100.1:5000/rootDesc.xml\r\n\r\n")
    assert ssdp.parse_answer(answer, "198.51.100.1") == "http://198.51.100.1:5000/rootDesc.xml"
    with pytest.raises(PortMapError, match="not on the answering host"):
        ssdp.parse_answer(answer, "198.51.100.7")
    with pytest.raises(PortMapError, match="not a gateway"):
        ssdp.parse_answer(answer.replace(b"InternetGatewayDevice", b"MediaRenderer"))
    with pytest.raises(PortMapError, match="not an IP URL"):
        ssdp.parse_answer(answer.replace(b"198.51.100.1:5000", b"evil.example"))
    with pytest.raises(PortMapError):
        ssdp.parse_answer(answer + b"X" * ssdp.MAX_ANSWER)


DESCRIPTION = b"""<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><device><deviceList><device><deviceList><device>
<serviceList>
<service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType><controlURL>/ppp</controlURL></service>
<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>/ctl/IPConn</controlURL></service>
</serviceList></device></deviceList></device></deviceList></device></root>"""


def test_igd_description_and_soap() -> None:
    service = igd.parse_description(DESCRIPTION, "http://198.51.100.1:5000/rootDesc.xml")
    assert service == igd.Service("http://198.51.100.1:5000/ctl/IPConn",
                                  "urn:schemas-upnp-org:service:WANIPConnection:1")
    with pytest.raises(PortMapError, match="leaves the gateway"):
        igd.parse_description(DESCRIPTION.replace(b"/ctl/IPConn", b"http://203.0.113.9/x"),
                              "http://198.51.100.1:5000/rootDesc.xml")
    headers, body = igd.soap_request(service, "AddPortMapping", {"NewPortMappingDescription": "<&>"})
    assert headers["SOAPAction"] == '"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping"'
    assert b"&lt;&amp;&gt;" in body
    ok = (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
          b'<u:GetExternalIPAddressResponse xmlns:u="x"><NewExternalIPAddress>203.0.113.21</NewExternalIPAddress>'
          b'</u:GetExternalIPAddressResponse></s:Body></s:Envelope>')
    assert igd.parse_soap(ok, "GetExternalIPAddress") == {"NewExternalIPAddress": "203.0.113.21"}
    fault = (b'<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><detail>'
             b'<UPnPError><errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription>'
             b'</UPnPError></detail></s:Fault></s:Body></s:Envelope>')
    with pytest.raises(PortMapRefused) as refused:
        igd.parse_soap(fault, "AddPortMapping")
    assert refused.value.code == igd.CONFLICT


def test_xml_with_entities_or_over_the_bound_is_refused_before_parsing() -> None:
    laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
              b"<root>&lol2;</root>")
    with pytest.raises(PortMapError, match="DOCTYPE"):
        igd.parse_xml(laughs)
    with pytest.raises(PortMapError, match="DOCTYPE"):
        igd.parse_xml(laughs.lower())
    with pytest.raises(PortMapError, match="bytes"):
        igd.parse_xml(b"<root>" + b" " * igd.MAX_DOCUMENT + b"</root>")
    with pytest.raises(PortMapError, match="not XML"):
        igd.parse_xml(b"<root>&undeclared;</root>")


@given(st.binary(max_size=1200))
def test_binary_parsers_reject_garbage_with_typed_errors(data: bytes) -> None:
    for parse in (natpmp.parse_external_address, natpmp.parse_map, pcp.parse):
        try:
            parse(data)
        except (PortMapError, PortMapRefused):
            pass


@given(st.binary(max_size=ssdp.MAX_ANSWER + 10), st.sampled_from([None, "198.51.100.1"]))
def test_ssdp_parser_rejects_garbage_with_typed_errors(data: bytes, sender: str | None) -> None:
    try:
        ssdp.parse_answer(data, sender)
    except PortMapError:
        pass


@given(st.one_of(st.binary(max_size=2000), st.text(max_size=2000).map(str.encode),
                 st.sampled_from([DESCRIPTION, DESCRIPTION[:-20], DESCRIPTION.replace(b"/ppp", b"")])))
def test_xml_parsers_reject_garbage_with_typed_errors(data: bytes) -> None:
    for parse in (lambda d: igd.parse_description(d, "http://198.51.100.1:5000/d.xml"),
                  lambda d: igd.parse_soap(d, "AddPortMapping")):
        try:
            parse(data)
        except (PortMapError, PortMapRefused):
            pass


def test_default_gateway_from_route_table() -> None:
    table = ("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
             "eth0\t0064A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n"
             "eth1\t00000000\t0264A8C0\t0003\t0\t0\t200\t00000000\n"
             "eth0\t00000000\t0164A8C0\t0003\t0\t0\t100\t00000000\n")
    assert gateway.parse_route_table(table) == "192.168.100.1"
    assert gateway.parse_route_table(table.splitlines()[0]) is None
    assert gateway.parse_route_table("x\neth0\t00000000\tzz\t3\t0\t0\t0\n") is None


def test_config_default_is_enabled_unless_the_environment_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert PortmapperConfig.default() is PortmapperConfig.ENABLED
    monkeypatch.setenv(ENV, "disabled")
    assert PortmapperConfig.default() is PortmapperConfig.DISABLED


def test_the_test_suite_never_maps_by_default() -> None:
    """conftest sets the environment: no endpoint of a test (or its children) probes a real gateway."""
    assert PortmapperConfig.default() is PortmapperConfig.DISABLED


async def test_endpoints_in_tests_do_not_map() -> None:
    from irohpy import Endpoint, presets  # noqa: PLC0415
    from irohpy.relay.map import RelayMode  # noqa: PLC0415

    async with await Endpoint.bind(preset=presets.MINIMAL, relay_mode=RelayMode.disabled(),
                                   bind_addrs=["127.0.0.1:0"]) as endpoint:
        assert endpoint.portmapper_config is PortmapperConfig.DISABLED
        assert endpoint._portmapper is None
