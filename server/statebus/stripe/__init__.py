"""Stripe: the webhook inbox, applying events, the upgrade API and reconciliation.

Stripe code writes tables and nothing else; it never talks to the hub or to sockets.
"""
