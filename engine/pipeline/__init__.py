"""The pipeline: task files (the DAG as data), the launcher, the stream runner and its jobs."""
