"""On-disk formats: one module per format, chosen through `registry`."""
