"""The rules of the unified status model, as data: statuses, the legacy mapping, transitions, ids, consistency, argument checks. No connections."""
