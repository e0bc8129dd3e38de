"""The warranty service: coverage, owners, claim and return decisions (see docs/warranty.md)."""
