"""The embedded demo: a simulated county with known truth, and the whole chain run over it."""
