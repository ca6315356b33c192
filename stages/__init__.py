"""One module per CLI stage: thin glue `run(config) -> outputs` over the `pipeline` library."""
