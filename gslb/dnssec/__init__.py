"""DNSSEC online signing: BIND-format keys, key states, the signer, its cache, compact denial."""
