"""trainmarket: shared plumbing (root error, paths, managed processes) and the command-line entry point."""
