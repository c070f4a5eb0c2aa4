"""Typed configuration: schema (pydantic) and loaders (HCL, YAML)."""
