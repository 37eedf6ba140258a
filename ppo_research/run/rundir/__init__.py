"""The run directory: checkpoints, resuming from them, one owner at a time, and the files that
describe the run (run.json, metrics.jsonl, summary.json)."""
