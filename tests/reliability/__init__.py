"""Reliability campaign (issue 6): nothing lost, nothing run twice, under load, faults and bad
input. Every module here cites the rules of ``SPEC.md`` it checks; ``_support.py`` has the shared
helpers (hang guards, pool-thread checks)."""
