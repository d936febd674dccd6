# ruff: noqa: F821 (Hook is a global the stack prelude defines)
# 202 Accepted with custom headers: set them before the first body byte.
res = Hook["res"]
res.status(202)
res.setHeader("Content-Type", "text/plain; charset=utf-8")
res.setHeader("X-Request-Method", Hook["req"].get("method", "GET"))
res.end("accepted\n")
