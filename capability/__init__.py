"""Conformance documents generated from what Precert registers: never written by hand twice."""
