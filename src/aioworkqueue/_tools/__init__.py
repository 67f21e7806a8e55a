"""Tools shipped with the package that are not part of the library: the benchmark scenarios
(``aioworkqueue bench``, ``bench/``) and the demo service (``aioworkqueue demo``, ``demo.py``).

They use the library through its public face only (``import aioworkqueue``), as a user would,
and nothing in the library imports them; the ``aioworkqueue`` command (``_cli.py``) does.
"""
