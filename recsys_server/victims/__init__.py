"""The victim recommenders behind the two attacker routes: one interface
(:mod:`.base`), one module per family, and the registry of them (:mod:`.registry`)."""
