"""Image translation networks (GDWCT layout with group-wise SVD-WCT), configs and checkpoints.

Public names (contract, see docs/DESIGN.md): :class:`GeneratorConfig`, :class:`DiscriminatorConfig`,
:class:`Generator`, :class:`MultiScaleDiscriminator`, :func:`save_checkpoint`, :func:`load_checkpoint`.
"""

from .checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from .config import DiscriminatorConfig, GeneratorConfig
from .networks import Generator, MultiScaleDiscriminator

__all__ = [
    "GeneratorConfig",
    "DiscriminatorConfig",
    "Generator",
    "MultiScaleDiscriminator",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointError",
    "FORMAT_VERSION",
]
