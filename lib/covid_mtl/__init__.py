"""covid-mtl core."""
