"""Synthetic phantoms and the sample studies the server starts with."""
