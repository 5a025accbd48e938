"""Tests of kernel environments (issue 16)."""
