"""Wall-to-wall maps from a model bundle: windows, executors, prediction, COG output."""
