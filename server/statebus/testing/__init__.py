"""Test doubles that ship with statebus, for its own tests and for apps built on it.

Nothing here runs in `statebus serve` unless asked for: a local fake of the Stripe API
(the one thing statebus's tests fake) and helpers to run a real server in-process.
"""
