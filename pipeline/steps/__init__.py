"""Global steps over a whole run: calibration (values estimated from a sample)
and the mixing step (Aioli proportions, training shards)."""
