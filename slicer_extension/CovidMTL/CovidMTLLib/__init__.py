"""Qt-free parts of the CovidMTL Slicer module: HTTP client, MRML scene helpers, logic."""
