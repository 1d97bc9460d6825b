"""Ids the server makes: random where they guard something, counted where they must only differ."""

from __future__ import annotations

import os
import re
import warnings

from streamchat import ids


def test_random_ids_are_128_bits_and_never_repeat_across_pool_refills() -> None:
    made = [ids.random_hex() for _ in range(3 * 4096 // 16 + 7)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", made_id) for made_id in made)
    assert len(set(made)) == len(made)


def test_counted_ids_differ_and_a_forked_child_gets_its_own() -> None:
    first, second = ids.counted_hex(), ids.counted_hex()
    assert first != second and len(first) == 32
    read, write = os.pipe()
    with warnings.catch_warnings():  # newer Pythons warn of fork() beside threads: none run here
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: its ids and its random bytes are its own
        os.write(write, f"{ids.counted_hex()} {ids.random_hex()}".encode())
        os._exit(0)
    os.close(write)
    child_counted, child_random = os.read(read, 200).decode().split()
    os.waitpid(pid, 0)
    os.close(read)
    assert child_counted[:16] != first[:16]  # another prefix
    assert child_random != ids.random_hex()
