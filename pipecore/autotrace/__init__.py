"""Tracing an unmodified program: the start-up hooks that swap in the traced Pipe, its
Python command line, and its run as a job of its own."""
