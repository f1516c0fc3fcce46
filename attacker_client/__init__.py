"""The attacker: SDK, CopyAttack agent, baselines and the experiment harness."""
