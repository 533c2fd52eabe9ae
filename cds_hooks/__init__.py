"""Coverage Requirements Discovery: the CDS Hooks services."""
