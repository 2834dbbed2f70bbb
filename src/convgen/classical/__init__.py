"""Classical (non-learned) methods used by the shipped models at inference and by the benchmarks as baselines."""
