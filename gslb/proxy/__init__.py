"""`gslb proxy`: the regional reverse proxy and load balancer (see docs/proxy.md).

Entry points: quick.serve_quick / quick.serve (programmatic), cli.add_commands (CLI),
config.load_settings (full-mode YAML), metrics.ProxyMetrics (one per ProxyServer: `.metrics`).
"""
