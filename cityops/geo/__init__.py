"""City model and spatial services: regions, units, unit grids, components, categories."""
