"""Analysing an archive: many cases, each written completely or not at all, in one process or on a Ray cluster.

``cases`` finds the cases in the inputs, ``case_output`` analyses one case into its own folder (staged, then renamed
into place, so a folder that exists is complete and a rerun skips it), ``summary`` turns reports into the rows of
``summary.csv``, ``local`` runs cases one after another in this process, and ``on_ray`` spreads them over a Ray
cluster whose workers load the model once each. ``covid-mtl analyze`` is the command over them.
"""
