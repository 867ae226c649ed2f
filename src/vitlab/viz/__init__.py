"""Pictures of what models do: attention maps, prediction grids, training curves."""
