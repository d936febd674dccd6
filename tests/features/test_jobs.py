"""jobs.json_pieces: a Piston result written as JSON piece by piece (sans-IO)."""

from __future__ import annotations

import json
import os

from sandbox.features.jobs import json_pieces


def test_pieces_are_the_json_of_the_decoded_result():
    output = os.urandom(200_000) + "é\u2028".encode() + b'\x00\n"\\' + b"\xe2\x82"
    value = {"run": {"stdout": output, "code": 0, "signal": None, "ok": True},
             "list": [1, "two", output[:5]]}  # fmt: skip
    pieces = list(json_pieces(value, 4096))
    assert len(pieces) > 10
    assert max(map(len, pieces)) < 2 * 4096
    decoded = json.loads(b"".join(pieces))
    assert decoded == {
        "run": {"stdout": output.decode("utf-8", "replace"), "code": 0, "signal": None,
                "ok": True},
        "list": [1, "two", output[:5].decode("utf-8", "replace")],
    }  # fmt: skip


def test_bytes_that_are_not_utf8_stay_three_bytes_not_a_six_byte_escape():
    written = b"".join(json_pieces({"stdout": b"\xff" * 1000}))
    assert written == b'{"stdout":"' + "\ufffd".encode() * 1000 + b'"}'


def test_a_small_result_is_one_piece():
    assert list(json_pieces({"stdout": b"hi\n", "code": 0})) == [b'{"stdout":"hi\\n","code":0}']
