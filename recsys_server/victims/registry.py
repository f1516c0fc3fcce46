"""Every victim family by name: ``--victim NAME`` on the command lines, ``victim`` in the
model artifact and in ``GET /admin/model``."""

from __future__ import annotations

from recsys_server.victims.base import Victim
from recsys_server.victims.itemknn import ItemKNNVictim
from recsys_server.victims.lightgcn import LightGCNVictim
from recsys_server.victims.mf import MFVictim
from recsys_server.victims.pinsage import PinSageVictim

VICTIMS: dict[str, type[Victim]] = {
    victim.name: victim for victim in (PinSageVictim, LightGCNVictim, ItemKNNVictim, MFVictim)
}
