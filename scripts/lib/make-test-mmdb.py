#!/usr/bin/env python3
"""Writes the small MaxMind DB files the enrichment tests read, with mmdb-writer (PyPI).

Usage: make-test-mmdb.py OUT_DIR

Every value below is what the Rust tests expect, written here by hand: the tests check the
reader and the enrichment against these, never against the output of the code under test.
Private, shared, loopback, link-local and Azure platform ranges carry a "trap" record
(country ZZ, AS 64512) that a correct enricher never reports, since it never looks them up.
"""
import os
import sys

from mmdb_writer import MMDBWriter
from netaddr import IPSet


def city(iso, country, continent, city_name=None, lat=None, lon=None):
    record = {
        "continent": {"names": {"en": continent, "de": continent}},
        "country": {"iso_code": iso, "names": {"en": country, "de": country}},
        "registered_country": {"iso_code": iso, "names": {"en": country}},
    }
    if city_name is not None:
        record["city"] = {"names": {"en": city_name, "de": city_name}}
    if lat is not None:
        record["location"] = {"latitude": lat, "longitude": lon, "accuracy_radius": 100}
    return record


TRAP_GEO = city("ZZ", "Trap", "Trap", "Trap", 0.5, 0.5)
TRAP_RANGES = [
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
    "169.254.0.0/16", "168.63.129.0/24", "fc00::/7", "fe80::/10",
]

GEO = [
    (["81.2.69.0/24"], city("GB", "United Kingdom", "Europe", "London", 51.5142, -0.0931)),
    (["20.38.0.0/16"], city("NL", "Netherlands", "Europe", "Amsterdam", 52.3759, 4.8975)),
    # Country level only: no city, no location.
    (["8.8.8.0/24"], city("US", "United States", "North America")),
    (["2001:4860::/32"], city("US", "United States", "North America", "Mountain View", 37.386, -122.0838)),
]

ASN = [
    (["20.38.0.0/16", "2603:1020::/31"], {"autonomous_system_number": 8075,
                                           "autonomous_system_organization": "MICROSOFT-CORP-MSN-AS-BLOCK"}),
    (["8.8.8.0/24", "2001:4860::/32"], {"autonomous_system_number": 15169,
                                         "autonomous_system_organization": "GOOGLE"}),
    # A number without an organization.
    (["81.2.69.0/24"], {"autonomous_system_number": 20712}),
    # Public peers of `flowlogd gen` (src/generator.rs PUBLIC_PEERS), so that the dashboards
    # test (tests/dashboards_engine.rs) finds AS buckets in generated flows. Whole /16s for
    # simplicity: the owners are real, the exact announced prefixes are not.
    (["20.106.0.0/16", "52.239.0.0/16", "40.74.0.0/16", "13.107.0.0/16"],
     {"autonomous_system_number": 8075, "autonomous_system_organization": "MICROSOFT-CORP-MSN-AS-BLOCK"}),
    (["151.101.0.0/16"], {"autonomous_system_number": 54113, "autonomous_system_organization": "FASTLY"}),
    (["104.16.0.0/16"], {"autonomous_system_number": 13335, "autonomous_system_organization": "CLOUDFLARENET"}),
]
TRAP_ASN = {"autonomous_system_number": 64512, "autonomous_system_organization": "TRAP"}


def write(path, database_type, entries, trap=None, ip_version=6, int_type="auto"):
    w = MMDBWriter(ip_version=ip_version, ipv4_compatible=(ip_version == 6),
                   database_type=database_type, languages=["en", "de"],
                   description="flowlogd test database", int_type=int_type)
    for nets, record in entries:
        if ip_version == 4:
            nets = [n for n in nets if ":" not in n]
        w.insert_network(IPSet(nets), record)
    if trap is not None:
        nets = [n for n in TRAP_RANGES if ip_version == 6 or ":" not in n]
        w.insert_network(IPSet(nets), trap)
    tmp = path + ".tmp"
    w.to_db_file(tmp)
    os.replace(tmp, path)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    write(os.path.join(out, "test-City.mmdb"), "GeoLite2-City", GEO, TRAP_GEO)
    write(os.path.join(out, "test-Country.mmdb"), "GeoLite2-Country",
          [(nets, {k: v for k, v in rec.items() if k not in ("city", "location")}) for nets, rec in GEO])
    write(os.path.join(out, "test-City-ipv4.mmdb"), "GeoLite2-City", GEO, ip_version=4)
    write(os.path.join(out, "test-ASN.mmdb"), "GeoLite2-ASN", ASN, TRAP_ASN, int_type="u32")


if __name__ == "__main__":
    main()
