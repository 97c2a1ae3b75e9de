"""Field data -> plot carbon stocks (Mg C/ha) with uncertainty.

Forest inventories (tree lists or stand volumes), soil horizons and wetland cores each have a
module here; parameters live in ``sinks/pools/data`` as tables with a source for every value.
"""
