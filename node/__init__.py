"""The trainer: model, dataset and assignment, inner loop, publishing, CLI."""
