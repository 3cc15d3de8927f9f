"""Layer converters, one module per family; importing a module registers its converters."""
