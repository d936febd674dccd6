"""Spawn throughput and latency of stack, with its peers side by side.

    .venv/bin/python -m benchmarks            # the full suite (about 10 minutes on 2 cores)
    .venv/bin/python -m benchmarks --quick    # a smoke run: bash and python, a few hundred calls

For hello-world scripts in bash, python, javascript, php, ruby and lua it
measures, in one run:

- the raw spawn floor: the interpreter run in a loop, no server
  (``floor.py``);
- lighttpd with mod_cgi serving the same scripts (``servers.py``);
- stack under ``--isolate none`` and ``--isolate bwrap`` (``servers.py``),

with the same load generator for both servers (``load.py``: wrk when it is
installed, else a Trio/httpx client of our own), then, for python and
javascript, stack with a warm pool against stack without, the server's
memory over many calls and its behaviour at concurrency 256 against a cap of
16 (``suite.py``). ``report.py`` turns the figures into tables, ratios to both
baselines and the issue's targets; results are in docs/BENCHMARKS.md.
"""
