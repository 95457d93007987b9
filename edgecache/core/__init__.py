"""The policy core: RFC 9111 rules as pure functions over parsed headers.

Nothing in this package performs I/O, reads a clock or imports an async framework; every time-dependent
function takes ``now`` (seconds since the epoch) as an argument.
"""
