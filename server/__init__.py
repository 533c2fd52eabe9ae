"""Precert: a payer-side HL7 Da Vinci prior-authorization server."""

__version__ = "0.1.0"
