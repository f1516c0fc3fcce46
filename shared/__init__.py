"""Code both sides of the simulator import: data readers, alignment, scenarios, metrics.

Nothing in this package imports from ``recsys_server`` or ``attacker_client``.
"""
