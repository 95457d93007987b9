"""Observation: counters kept by the engine (cheap on the hit path) and exporters that read them."""
