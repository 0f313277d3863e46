"""Tools that run and read experiments: sweeps, reports, records, cost estimates.

They drive the simulation (federated/) and read its results; utils/ stays a leaf library
that imports neither (an import-linter contract).
"""
