"""Synthesis methods over shared pieces: BN-statistics hooks, priors, jitter, label schedule, shard writer."""
