"""clawmedic's memory: incidents (SQLite), the JSONL event stream, the status JSON, and the daemon lock."""
