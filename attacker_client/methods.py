"""The methods of the experiments, by name: which attack each one runs."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from attacker_client.attack import AttackMethod
from attacker_client.attack_baselines import random_attack, target_attack, without_attack
from attacker_client.copyattack import CopyAttackArgs, copyattack
from attacker_client.generated import GENERATED, generated_method
from attacker_client.pretrain import PretrainedPolicy, copyattack_pretrained
from shared.errors import CopyAttackError

METHODS = (
    "WithoutAttack",
    "RandomAttack",
    "TargetAttack40",
    "TargetAttack70",
    "TargetAttack100",
    "PolicyNetwork",
    "CopyAttack-Masking",
    "CopyAttack-Length",
    "CopyAttack",
)
# CopyAttack with a policy trained before the attack (attacker_client/pretrain.py): across
# training targets on the server ("Amortised") or on the attacker's surrogate; as it is,
# or fine-tuned per target ("+FT", the configured episodes)
PRETRAINED = {
    "CopyAttack-Amortised": ("amortised", False),
    "CopyAttack-Amortised+FT": ("amortised", True),
    "CopyAttack-Surrogate": ("surrogate", False),
    "CopyAttack-Surrogate+FT": ("surrogate", True),
}
ALL_METHODS = (*METHODS, *PRETRAINED, *GENERATED)
# the learners judged against the best of the other methods in the paired tests
LEARNERS = ("CopyAttack", *PRETRAINED)

# the method that spends a pretrained policy as it is, per kind of policy
PRETRAINED_NAME = {kind: name for name, (kind, fine_tune) in PRETRAINED.items() if not fine_tune}


# the learning methods: CopyAttack and its ablations, as flags of CopyAttackArgs
LEARNED: dict[str, dict[str, Any]] = {
    "PolicyNetwork": {"depth": 1},
    "CopyAttack-Masking": {"masking": False, "crafting": False},
    "CopyAttack-Length": {"crafting": False},
    "CopyAttack": {},
}


def method_of(
    name: str,
    args: CopyAttackArgs,
    policies: dict[str, PretrainedPolicy] | None = None,
) -> AttackMethod:
    """The attack behind a method name (``policies``: the loaded pretrained ones)."""
    fixed: dict[str, AttackMethod] = {
        "WithoutAttack": without_attack,
        "RandomAttack": random_attack,
        "TargetAttack40": functools.partial(target_attack, share=0.4),
        "TargetAttack70": functools.partial(target_attack, share=0.7),
        "TargetAttack100": functools.partial(target_attack, share=1.0),
    }
    if name in fixed:
        return fixed[name]
    if name in GENERATED:
        return generated_method(name)
    if name in LEARNED:
        return functools.partial(copyattack, args=dataclasses.replace(args, **LEARNED[name]))
    if name in PRETRAINED:
        kind, fine_tune = PRETRAINED[name]
        if not policies or kind not in policies:
            raise CopyAttackError(f"{name} needs a {kind} policy (--{kind}-policy FILE)")
        return functools.partial(
            copyattack_pretrained,
            pretrained=policies[kind],
            fine_tune_episodes=args.episodes if fine_tune else 0,
        )
    raise CopyAttackError(f"unknown method {name!r}; known: {', '.join(ALL_METHODS)}")
