"""The locality facts a learning rule declares: weight transport, a global broadcast, locking, auxiliary nets.

Each rule in methods/ states them once, as a class attribute `locality = Locality(...)`; `python -m bench
list` prints them on the rule's line and docs/methods.md ("Locality audit") tabulates them. The one fact
that can be measured, that an unlocked block's update does not depend on anything above it, is tested for
every rule by tests/test_locality.py, and the declaration must agree with what that test shows.

The locking terms are those of Jaderberg et al. 2017 ("Decoupled Neural Interfaces using Synthetic
Gradients", ICML), as Belilovsky et al. 2020 (DGL, ICML) grade them: a block is *backward-locked* when
its update waits for the blocks above it to run forward and backward (BP: the error reaches block i
through every layer above it); *update-locked* when it waits only for their forward pass (DFA: the
error is taken at the output and sent straight to block i); unlocked when it needs nothing the blocks
above compute (DRTP's target projection, a local loss through the block's own auxiliary net). This file
imports no torch: the record and report wings may read it.
"""

from __future__ import annotations

from dataclasses import dataclass

# What a block's backward uses of the forward weights above it: nothing (fixed or learned feedback of its
# own, or no backward at all), their transpose (BP's weight transport), or their sign (sign symmetry).
TRANSPORTS = ("none", "W^T", "sign(W)")
# The strongest lock a block's update has, strongest first (see the module docstring).
LOCKINGS = ("backward", "update", "none")


@dataclass(frozen=True)
class Locality:
    """What one rule needs beyond a block's own input, parameters and the labels it is shown.

    transport: one of TRANSPORTS, what the backward of the hidden blocks uses of the forward weights;
    broadcast: True where one global error or target (or a scalar of it) is sent to every block directly;
    locking: one of LOCKINGS, whether block i's update waits for the blocks above it (forward and
      backward, forward only, or not at all);
    auxiliary: True where the rule trains parameters that are neither the network's nor feedback
      (local classifier heads, decoders), used in training only.
    """

    transport: str
    broadcast: bool
    locking: str
    auxiliary: bool

    def __post_init__(self):
        for key, value, accepted in (
            ("transport", self.transport, TRANSPORTS),
            ("locking", self.locking, LOCKINGS),
        ):
            if value not in accepted:
                raise ValueError(
                    f"Locality {key} {value!r}; accepted: one of {', '.join(accepted)}"
                )
        for key in ("broadcast", "auxiliary"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"Locality {key} {getattr(self, key)!r}; accepted: True or False")

    @property
    def unlocked(self) -> bool:
        """Whether block i's update needs nothing the blocks above it compute (the tested property)."""
        return self.locking == "none"

    def describe(self) -> str:
        """The facts in words, as `bench list` prints them: 'transport W^T, no broadcast, backward-locked,
        no auxiliary'."""
        return ", ".join(
            [
                f"transport {self.transport}",
                "broadcast" if self.broadcast else "no broadcast",
                "unlocked" if self.unlocked else f"{self.locking}-locked",
                "auxiliary" if self.auxiliary else "no auxiliary",
            ]
        )


def check_blocks(method, model) -> None:
    """Refuse to run `method` on `model` where the rule learns at block outputs but the network's blocks
    are not its stages (`model.unstaged` says why: a torchvision model the suite cannot cut into stages,
    one block holding all of it, would train by BP inside that block without a word). A rule whose every
    update comes from one backward through the whole network (locking `backward`: bp, fa, the sign rules,
    kp) uses no block boundary to learn, and runs on it."""
    why = getattr(model, "unstaged", None)
    if why and method.locality.locking != "backward":
        raise ValueError(
            f"method {method.name!r} learns at the network's block outputs, but {why}; rules "
            "that learn through one backward of the whole network (locality: backward-locked, "
            "`python -m bench list`) run on it"
        )
