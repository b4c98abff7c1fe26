"""Small shared utilities with no gslb dependencies."""
