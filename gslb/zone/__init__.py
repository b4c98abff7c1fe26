"""Zone data: loading master files and authoritative lookup."""

from .loader import load_zone_file, load_zones
from .lookup import Kind, LookupResult, ZoneSet

__all__ = ["Kind", "LookupResult", "ZoneSet", "load_zone_file", "load_zones"]
