"""Whole networks built from facekernels.nn (later issues)."""
