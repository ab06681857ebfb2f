"""AlphaEdit (Fang et al., ICLR 2025): MEMIT's batched update projected onto the null space of the preserved
keys (registered as 'alphaedit')."""

from kdel.delete.alphaedit.hparams import AlphaEditHparams
from kdel.delete.alphaedit.method import AlphaEdit
from kdel.delete.alphaedit.projection import NullSpace, null_space_projection

__all__ = ["AlphaEdit", "AlphaEditHparams", "NullSpace", "null_space_projection"]
