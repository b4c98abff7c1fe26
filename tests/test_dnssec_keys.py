"""DNSSEC keys: generation, BIND file format both ways, permissions, states, the CLI."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import dns.dnssec
import dns.name
import pytest

from gslb.cli import main as cli_main
from gslb.dnssec.keys import (
    ECDSAP256SHA256,
    ED25519,
    KeyState,
    ds_records,
    generate_key,
    load_key_dir,
    read_key,
    write_key,
)
from gslb.errors import ConfigError

ZONE = dns.name.from_text("example.test.")
NOW = 1_800_000_000


def main(argv: list[str]) -> int:
    """`gslb ARGV`, leaving the logging set-up as it was: main() installs its own root
    handler, which would outlive the test and write into a closed capture stream."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return cli_main(argv)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize("algorithm", [ECDSAP256SHA256, ED25519])
def test_written_key_reads_back_the_same(tmp_path: Path, algorithm: int) -> None:
    key = generate_key(ZONE, algorithm, now=NOW)
    public, private = write_key(key, tmp_path)
    assert public.name == f"Kexample.test.+{algorithm:03d}+{key.tag:05d}.key"
    assert os.stat(private).st_mode & 0o777 == 0o600
    again = read_key(private)
    assert again.dnskey == key.dnskey
    assert again.tag == key.tag
    assert again.timing == key.timing
    assert again.state(NOW) is KeyState.ACTIVE
    assert "PrivateKey" not in repr(again) and "private_key" not in repr(again)


def test_keys_from_bind_dnssec_keygen_work(tmp_path: Path) -> None:
    keygen = shutil.which("dnssec-keygen")
    assert keygen is not None, "bind9-utils (dnssec-keygen) is a test dependency"
    out = subprocess.run(
        [keygen, "-q", "-K", str(tmp_path), "-a", "ECDSAP256SHA256", "-f", "KSK", "example.test"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    key = read_key(tmp_path / f"{out}.private")
    assert key.sep and key.algorithm == 13
    assert out.endswith(f"+{key.tag:05d}")
    # Our DS equals BIND's.
    dsfromkey = subprocess.run(
        ["dnssec-dsfromkey", "-2", str(tmp_path / f"{out}.key")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    (ours,) = ds_records([key], NOW)
    assert ours.digest.hex().upper() == dsfromkey[-1].upper()


def test_group_readable_private_key_is_refused(tmp_path: Path) -> None:
    _, private = write_key(generate_key(ZONE, now=NOW), tmp_path)
    os.chmod(private, 0o640)
    with pytest.raises(ConfigError) as info:
        load_key_dir(tmp_path)
    assert str(private) in str(info.value)
    assert "chmod 600" in str(info.value)


def test_corrupt_private_key_names_file_and_line_without_echoing(tmp_path: Path) -> None:
    _, private = write_key(generate_key(ZONE, now=NOW), tmp_path)
    text = private.read_text().replace("PrivateKey: ", "PrivateKey: AAAA")
    private.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_key(private)
    assert f"{private}:3: PrivateKey: not a valid private key" in str(info.value)
    secret = text.splitlines()[2].split()[1]
    assert secret not in str(info.value)


def test_public_key_of_another_pair_is_refused(tmp_path: Path) -> None:
    one = generate_key(ZONE, now=NOW)
    two = generate_key(ZONE, now=NOW)
    public, private = write_key(one, tmp_path)
    public2, _ = write_key(two, tmp_path / "other")
    public.write_text(public2.read_text())
    with pytest.raises(ConfigError, match="does not belong to the private key"):
        read_key(private)


def test_states_follow_the_timing_metadata() -> None:
    key = generate_key(ZONE, now=NOW, publish=NOW, activate=NOW + 100)
    key = key.with_timing(Inactive=NOW + 200, Delete=NOW + 300)
    assert key.state(NOW - 1) is KeyState.CREATED
    assert key.state(NOW) is KeyState.PUBLISHED
    assert key.state(NOW + 100) is KeyState.ACTIVE
    assert key.state(NOW + 200) is KeyState.RETIRED
    assert key.state(NOW + 300) is KeyState.REMOVED
    assert key.next_change(NOW + 150) == NOW + 200
    assert key.next_change(NOW + 300) is None


def test_cli_keygen_ds_list_add_retire(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = str(tmp_path / "keys")
    assert main(["dnssec", "keygen", "example.test", "--dir", keys]) == 0
    assert main(["dnssec", "keygen", "other.test", "--dir", keys, "--split"]) == 0
    assert main(["dnssec", "keygen", "ed.test", "--dir", keys, "--algorithm", "ed25519"]) == 0
    loaded = load_key_dir(keys)
    (csk,) = loaded[ZONE]
    assert csk.sep and csk.algorithm == 13
    assert sorted(k.role for k in loaded[dns.name.from_text("other.test.")]) == ["ksk", "zsk"]
    assert loaded[dns.name.from_text("ed.test.")][0].algorithm == 15
    capsys.readouterr()

    assert main(["dnssec", "ds", "example.test", "--dir", keys]) == 0
    line = capsys.readouterr().out.strip()
    expected = dns.dnssec.make_ds(ZONE, csk.dnskey, "SHA256")
    assert line == f"example.test. IN DS {expected.to_text()}"

    assert main(["dnssec", "add", "example.test", "--dir", keys, "--activate", "+2h"]) == 0
    capsys.readouterr()
    assert main(["dnssec", "retire", "example.test", str(csk.tag), "--dir", keys]) == 0
    assert main(["dnssec", "list", "example.test", "--dir", keys]) == 0
    listing = capsys.readouterr().out
    assert f"{csk.tag:>5}   13  csk   retired" in listing
    assert "published" in listing
    assert main(["dnssec", "retire", "example.test", "1", "--dir", keys]) == 2


def test_check_validates_the_dnssec_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = Path(__file__).resolve().parent.parent
    config = tmp_path / "gslb.yaml"
    config.write_text(
        f"geoip: {root / 'geodata' / 'gslb-test-city.mmdb'}\n"
        "datacenters:\n"
        "  eu-west: {region: eu-west, latitude: 53.35, longitude: -6.26, ipv4: [192.0.2.21]}\n"
        "services:\n"
        "  www.example.test:\n"
        "    {policy: geoproximity, datacenters: [eu-west], on_all_down: fail_open}\n"
        "dnssec:\n  key_dir: keys\n  validity: 100\n"
    )
    assert main(["check", "--config", str(config), "--zones", str(root / "zones")]) == 1
    assert f"{config}:9:3: dnssec.validity: must be between 3600" in capsys.readouterr().out


def test_missing_key_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key directory does not exist"):
        load_key_dir(tmp_path / "nope")


def test_dns_command_refuses_to_start_with_a_bad_key_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    zones = Path(__file__).resolve().parent.parent / "zones"
    code = main(
        ["dns", "--zones", str(zones), "--dnssec-keys", str(tmp_path / "nope"), "--admin", "off"]
    )
    assert code == 2
    assert "key directory does not exist" in capsys.readouterr().err


def test_ds_of_a_zone_with_only_zone_signing_keys(tmp_path: Path) -> None:
    """dnssec-keygen without -f KSK makes a ZSK; alone, it is the key the DS points at."""
    zsk = generate_key(ZONE, sep=False, now=NOW)
    (ds,) = ds_records([zsk], NOW)
    assert ds == dns.dnssec.make_ds(ZONE, zsk.dnskey, "SHA256")
    ksk = generate_key(ZONE, sep=True, now=NOW)
    (ds,) = ds_records([zsk, ksk], NOW)
    assert ds.key_tag == ksk.tag
