"""gslb: global server load balancer (authoritative GeoDNS, health checks, regional proxy)."""

__version__ = "0.1.0"
