"""Deliveries arriving in incoming/: fcopy tars, level-0 files, manifests and RetDefs, registered as downlinks."""
