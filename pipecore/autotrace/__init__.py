"""Tracing an unmodified program: start-up hooks that swap in the traced Pipe."""
