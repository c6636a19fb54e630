"""Benchmarks of pykbroker with ceilings measured in the same run (`make bench`)."""
