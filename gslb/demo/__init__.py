"""Demo parts for `gslb run`: small backends that say which datacenter answered."""
