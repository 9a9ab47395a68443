"""The YAML rule engine: `schema` reads mapping files, `expr` and `ops` compute targets,
`engine` applies a mapping, `mapping` holds the public `Mapping` and the built-in library."""
