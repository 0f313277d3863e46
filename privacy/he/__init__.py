"""Homomorphic-encryption aggregation (CKKS through TenSEAL) and the cyclic protocol."""
