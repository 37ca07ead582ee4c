"""Routing: local models, providers and their credentials, model-name mappings,
and the walk down a chain (resolution, failover, breakers, balancing,
continuation). The middle layer: it imports inference, never gateway."""
