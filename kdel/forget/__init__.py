"""Forget an entity: delete every fact of one entity, check nothing can still be extracted, audit the damage."""

from kdel.forget.apply import CumulativeDelta, ForgetEdit, apply_forget, mode_for
from kdel.forget.entity import ENTITY_GROUPS, Entity, entity_fact_ids, entity_probe_groups, resolve_entity
from kdel.forget.extraction import extraction_check

__all__ = ["ENTITY_GROUPS", "CumulativeDelta", "Entity", "ForgetEdit", "apply_forget", "entity_fact_ids",
           "entity_probe_groups", "extraction_check", "mode_for", "resolve_entity"]
