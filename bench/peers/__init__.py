"""Reference servers the gateway is measured against (see docs/benchmarks.md)."""
