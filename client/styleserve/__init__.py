"""styleserve: the thin client of the styleserve style-transfer service (no torch)."""
