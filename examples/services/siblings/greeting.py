"""A module of hello.py."""


def greeting(name):
    return f"Hello, {name}! (greeting.py)"
