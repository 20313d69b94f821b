"""Every command the README's command-line section lists is run, as written, by some test.

The map below names the test for each command; this test checks that the README lists no
command without one and that each named test exists, so the map cannot rot.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from irohpy.cli.main import COMMANDS

ROOT = Path(__file__).resolve().parent.parent

RUN_BY = {
    "--version": "test_cli::test_version",
    "key generate": "test_cli::test_key_generate_show_roundtrip",
    "key show": "test_cli::test_key_generate_show_roundtrip",
    "ticket inspect": "test_cli::test_ticket_inspect_text_and_json",
    "ping receiver": "test_cli_network::test_dial_by_id_through_a_local_dns_server",
    "ping sender": "test_cli::test_ping_receiver_and_sender",
    "pipe listen": "test_cli::test_pipe_listen_connect_stdio_both_ways",
    "pipe connect": "test_cli::test_pipe_listen_connect_stdio_both_ways",
    "pipe generate-ticket": "test_cli::test_pipe_generate_ticket_needs_a_persistent_key",
    "pipe listen-tcp": "test_cli::test_pipe_tcp_forwarding",
    "pipe connect-tcp": "test_cli::test_pipe_tcp_forwarding",
    "pipe listen-unix": "test_cli_network::test_pipe_unix_socket_forwarding",
    "pipe connect-unix": "test_cli_network::test_pipe_unix_socket_forwarding",
    "relay": "test_cli::test_relay_dev_prints_a_client_url_and_two_run_side_by_side",
    "relay token issue": "test_relay_server::test_cli_token_issue_and_inspect",
    "relay token inspect": "test_relay_server::test_cli_token_issue_and_inspect",
    "dns-server": "test_dns_server::test_put_get_and_dns_over_udp_and_tcp",
    "chat open": "test_chat::test_open_join_and_chat_both_ways",
    "chat join": "test_chat::test_open_join_and_chat_both_ways",
    "send": "test_sendme::test_single_file_and_progress_stages",
    "receive": "test_sendme::test_single_file_and_progress_stages",
    "doc create": "test_docs_cli::test_local_commands",
    "doc set": "test_docs_cli::test_local_commands",
    "doc get": "test_docs_cli::test_local_commands",
    "doc ls": "test_docs_cli::test_local_commands",
    "doc share write": "test_docs_cli::test_share_join_watch",
    "doc join": "test_docs_cli::test_share_join_watch",
    "doc watch": "test_docs_cli::test_share_join_watch",
    "doctor report": "test_doctor::test_cli_report_json",
    "doctor accept": "test_doctor::test_accept_connect_relay_then_direct_and_plots",
    "doctor connect": "test_doctor::test_accept_connect_relay_then_direct_and_plots",
    "doctor plot": "test_doctor::test_accept_connect_relay_then_direct_and_plots",
    "lab list": "test_cli::test_lab_list",
    "lab run": "test_lab_scenarios::test_cli_lab_run",
}


def readme_commands() -> list[str]:
    section = (ROOT / "README.md").read_text().split("## Command line", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if "irohpy" in line]


def command_path(line: str) -> str:
    """``irohpy pipe listen-tcp --host X`` -> ``pipe listen-tcp``: the command words only."""
    words = line.split("irohpy", 1)[1].split()
    if words[0] == "--version":
        return "--version"
    path = [words[0]]
    for word in words[1:]:
        if not re.fullmatch(r"[a-z][a-z-]*", word) or word.endswith("...") or len(path) == 3:
            break
        path.append(word)
    return " ".join(path)


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_is_run_by_a_test(line: str) -> None:
    assert "|" not in line, f"`{line}` reads as a shell pipeline; give each command its own line"
    path = command_path(line)
    assert path.split()[0] in (*COMMANDS, "--version"), line
    assert path in RUN_BY, f"no test runs the README's `{line}`"
    module, name = RUN_BY[path].split("::")
    assert hasattr(importlib.import_module(f"tests.{module}"), name), RUN_BY[path]
