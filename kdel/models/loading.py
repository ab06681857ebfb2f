"""Load a local Hugging Face causal LM + tokenizer safely (safetensors only, no remote code, no network:
every `from_pretrained` is given `local_files_only=True`, so the Python API never reaches the Hub whatever
the environment says).

A model trained by kdel records the hash of its KG bundle in `kdel_model.json`; loading it with a
different KG is refused, so a mismatched model/KG pair can never be audited by mistake.
"""

from __future__ import annotations

import json
from pathlib import Path

from kdel.errors import UserError

MODEL_META = "kdel_model.json"


def read_model_meta(model_dir: str | Path) -> dict:
    path = Path(model_dir) / MODEL_META
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def kdel_trained(model_dir: str | Path) -> bool:
    """Whether kdel trained this model (it has kdel_model.json or train_report.json): a toy model whose facts and
    text kdel generated. Fluency checks are on by default for every other model."""
    path = Path(model_dir)
    return (path / MODEL_META).is_file() or (path / "train_report.json").is_file()


def check_model_dir(model_dir: str | Path) -> Path:
    path = Path(model_dir)
    if path.is_file():
        raise UserError(f"{path} is a file, not a model directory")
    if not path.is_dir():
        raise UserError(f"model directory {path} does not exist")
    if not (path / "config.json").exists():
        raise UserError(f"{path} is not a Hugging Face model directory (no config.json)")
    if not list(path.glob("*.safetensors")):
        extra = " (it has .bin pickles, which kdel never loads)" if list(path.glob("*.bin")) else ""
        raise UserError(f"{path} has no safetensors weights{extra}")
    return path


def check_kg_match(model_dir: str | Path, kg_hash: str | None) -> None:
    """Refuse a model that kdel trained on another KG bundle."""
    meta = read_model_meta(model_dir)
    trained_on = meta.get("kg_hash")
    if kg_hash and trained_on and trained_on != kg_hash:
        raise UserError(
            f"model {model_dir} was trained on another KG (bundle hash {trained_on[:12]}, this KG is {kg_hash[:12]})"
        )


def save_model(model, tokenizer, out_dir: str | Path) -> None:
    """save_pretrained (safetensors only) of model and tokenizer, without transformers' progress bars."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(str(out_dir), safe_serialization=True)
        tokenizer.save_pretrained(str(out_dir))
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def load_model(model_dir: str | Path, device: str = "cpu", kg_hash: str | None = None, dtype=None):
    """(model in eval mode on `device`, tokenizer). Raises UserError on anything a user can fix."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar on stderr: kdel prints its own progress
    hf_logging.set_verbosity_error()
    path = check_model_dir(model_dir)
    check_kg_match(path, kg_hash)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any loader failure here is a broken directory
        raise UserError(f"cannot load the tokenizer in {path}: {type(e).__name__}: {e}") from None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(path), trust_remote_code=False, use_safetensors=True, dtype=dtype or torch.float32,
            local_files_only=True,
        )
    except Exception as e:  # noqa: BLE001
        raise UserError(f"cannot load the model in {path}: {type(e).__name__}: {e}") from None
    model.to(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer


def load_model_for_table(model_dir: str | Path, table, device: str = "cpu", dtype=None):
    """Load a model to run on a FactTable: refuses a model trained on another KG, and facts whose target the
    tokenizer cannot encode (one clear line each)."""
    kg_hash = table.source_hash if table.source == "kg" else None
    model, tokenizer = load_model(model_dir, device, kg_hash=kg_hash, dtype=dtype)
    table.check_encodable(tokenizer)
    return model, tokenizer
