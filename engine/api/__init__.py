"""The one face of the engine for the console and the CLI listings: read a snapshot, act on the pipeline."""
