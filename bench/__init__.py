"""The benchmark (`make bench`, `make bench-quick`): tracing cost, end to end, page, start."""
