"""Built-in mappings (YAML), shipped as package data of ckptmap."""
