"""rooms-bench: latency, throughput and capacity of an OpenEnv env server."""
