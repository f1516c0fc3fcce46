"""Route modules: attacker (two routes), admin (under /admin), operations."""
