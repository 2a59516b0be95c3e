"""Uploading an export folder (model, tokenizer, model card) to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

from movprune.errors import ExportError


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False) -> str:
    """Create the model repository ``repo_id`` if needed and upload ``folder`` to it; returns the
    repository's URL. Any failure (offline, no token, no permission) is one :class:`ExportError`."""
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                          commit_message="Upload a movprune export")
    except Exception as e:  # huggingface_hub raises many types; all mean "not uploaded"
        reason = str(e).splitlines()[0] if str(e) else ""
        raise ExportError(f"--push-to-hub {repo_id}: upload failed ({type(e).__name__}: {reason}); the "
                          f"export is in {folder}: check the network and `hf auth login`, then run "
                          f"`hf upload {repo_id} {folder}`") from None
    return str(url)
