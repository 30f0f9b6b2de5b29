"""The validator: evaluation, filters, scoring, rounds, persisted state, service."""
