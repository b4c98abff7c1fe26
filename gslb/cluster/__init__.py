"""Cluster mode: configuration generations and operator overrides kept in etcd."""
