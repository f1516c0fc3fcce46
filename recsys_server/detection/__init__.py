"""Shilling detection on the server: profile features, detectors fitted on the real
users, and their verdict on a world's users against the ledger's ground truth."""
