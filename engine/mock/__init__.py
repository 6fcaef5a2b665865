"""Mock deliveries (HDF5 sources and RetDefs in the facility's formats) and the headless demo."""
