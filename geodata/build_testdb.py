"""Build the deterministic TEST GeoIP databases in geodata/ from geodata/networks.csv.

    .venv/bin/python geodata/build_testdb.py            # writes geodata/gslb-test-*.mmdb

The City database gets every CSV row plus ~20,000 generated /24 networks under 10.0.0.0/8
(assigned round-robin to the CSV's cities) so benchmarks see a realistically large tree. The
Country database holds the CSV rows reduced to continent and country, like GeoLite2-Country.
Output is byte-for-byte reproducible (fixed build_epoch).
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

HERE = Path(__file__).resolve().parent
BUILD_EPOCH = 1_764_201_600  # 2025-11-27T00:00:00Z; fixed so the output is reproducible
BULK_NETWORKS = 20_480  # 10.0.0.0/24 .. 10.79.255.0/24

CONTINENTS = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}
COUNTRIES = {
    "AR": "Argentina", "AU": "Australia", "BR": "Brazil", "CA": "Canada", "DE": "Germany",
    "EG": "Egypt", "ES": "Spain", "FR": "France", "GB": "United Kingdom", "IE": "Ireland",
    "IN": "India", "JP": "Japan", "KR": "South Korea", "MX": "Mexico", "NZ": "New Zealand",
    "SG": "Singapore", "US": "United States", "ZA": "South Africa",
}  # fmt: skip


class _ReproducibleWriter(MMDBWriter):
    def _build_meta(self) -> dict[str, Any]:
        meta = super()._build_meta()
        meta["build_epoch"] = BUILD_EPOCH
        return meta


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        lines = [line for line in f if line.strip() and not line.lstrip().startswith("#")]
    return list(csv.DictReader(lines))


def city_record(row: dict[str, str]) -> dict[str, Any]:
    rec = country_record(row)
    if row["subdivision"]:
        rec["subdivisions"] = [{"iso_code": row["subdivision"]}]
    if row["city"]:
        rec["city"] = {"names": {"en": row["city"]}}
    if row["latitude"] and row["longitude"]:
        rec["location"] = {
            "latitude": float(row["latitude"]),
            "longitude": float(row["longitude"]),
            "accuracy_radius": 50,
        }
    return rec


def country_record(row: dict[str, str]) -> dict[str, Any]:
    code = row["continent"]
    rec: dict[str, Any] = {"continent": {"code": code, "names": {"en": CONTINENTS[code]}}}
    if row["country"]:
        iso = row["country"]
        rec["country"] = {"iso_code": iso, "names": {"en": COUNTRIES.get(iso, iso)}}
    return rec


def build(rows: list[dict[str, str]], out_dir: Path, bulk: int = BULK_NETWORKS) -> list[Path]:
    city = _ReproducibleWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoIP2-City",
        languages=["en"],
        description="gslb TEST City database (synthetic; see geodata/README.md)",
    )
    country = _ReproducibleWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoLite2-Country",
        languages=["en"],
        description="gslb TEST Country database (synthetic; see geodata/README.md)",
    )
    # Shorter prefixes first, so a more specific network is carved out of its supernet.
    ordered = sorted(rows, key=lambda r: ipaddress.ip_network(r["network"]).prefixlen)
    for row in ordered:
        net = IPSet([row["network"]])
        city.insert_network(net, city_record(row))
        country.insert_network(net, country_record(row))
    # Bulk networks for benchmarks: round-robin over the rows that name a city.
    places = [r for r in rows if r["city"]]
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    for i in range(bulk):
        network = f"{ipaddress.IPv4Address(base + (i << 8))}/24"
        city.insert_network(IPSet([network]), city_record(places[i % len(places)]))
    out_dir.mkdir(parents=True, exist_ok=True)
    city_path = out_dir / "gslb-test-city.mmdb"
    country_path = out_dir / "gslb-test-country.mmdb"
    city.to_db_file(str(city_path))
    country.to_db_file(str(country_path))
    return [city_path, country_path]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default=str(HERE / "networks.csv"))
    parser.add_argument("--out", default=str(HERE))
    parser.add_argument("--bulk", type=int, default=BULK_NETWORKS)
    args = parser.parse_args()
    for path in build(read_rows(Path(args.csv)), Path(args.out), args.bulk):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
