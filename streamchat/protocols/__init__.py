"""One module per wire dialect, each encoding a turn's event log for its readers."""
