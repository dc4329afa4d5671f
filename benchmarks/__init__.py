"""pets benchmarks: ``python -m benchmarks [NAME ...] [--quick]`` (``make bench``)."""
