"""Peer servers for the benchmarks: the same fan-out as memoryd's typing signal."""
