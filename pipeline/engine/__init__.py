"""The engine core: config, shard planning, read/triage, the DAG of fused stage
workers, decide/write, the ledger, run manifests and reports."""
