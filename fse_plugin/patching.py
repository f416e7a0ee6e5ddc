"""``fse patch-arcface``: applies the plugin's patches to insightface ``recognition/arcface_torch``.

The ``*.patch`` files live in the repository's top-level ``patches/``; a non-editable install
carries them to ``<prefix>/share/fse_plugin/patches`` (setup.py ``data_files``).
Applying uses ``git apply`` as a plain patch tool (no repository needed): every patch is checked
first, already-applied ones are detected with ``--reverse --check`` and skipped, and a patch that
does not apply is reported with its file and hunk before anything is changed.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from fse_plugin.common import FSEError

__all__ = ["PATCH_DIRS", "PatchError", "PatchResult", "patch_files", "find_arcface_dir",
           "apply_patches"]

PATCH_DIRS = (Path(__file__).resolve().parents[1] / "patches",  # source checkout / editable install
              Path(sys.prefix) / "share" / "fse_plugin" / "patches")  # pip install .


class PatchError(FSEError):
    """A patch cannot be applied (or reverted); the message names the patch, file and hunk."""


@dataclass
class PatchResult:
    patch: Path
    # 'applied' | 'reverted' | 'already applied' | 'not applied' | 'would apply' | 'would revert'
    status: str
    files: list[str]


def patch_files() -> list[Path]:
    """The patches in name order, from the first of ``PATCH_DIRS`` that has any."""
    for folder in PATCH_DIRS:
        found = sorted(folder.glob("*.patch"))
        if found:
            return found
    raise PatchError(f"no *.patch files found in {' or '.join(map(str, PATCH_DIRS))}")


def find_arcface_dir(path: str | os.PathLike) -> Path:
    """``path`` itself if it is arcface_torch, or ``path/recognition/arcface_torch`` (insightface
    root)."""
    path = Path(path).expanduser().resolve()
    for cand in (path, path / "recognition" / "arcface_torch"):
        if (cand / "train_v2.py").is_file() and (cand / "dataset.py").is_file():
            return cand
    raise PatchError(f"{path}: not an arcface_torch dir (no train_v2.py and dataset.py there or in "
                     f"recognition/arcface_torch)")


def _files(patch: Path) -> list[str]:
    return re.findall(r"^\+\+\+ b/(\S+)", patch.read_text(), flags=re.M)


def _hunk_of(patch: Path, file: str, line: int) -> str:
    """'hunk N (@@ ... @@)' of ``file`` in ``patch`` starting at ``line`` (old or new side)."""
    current, n = None, 0
    for row in patch.read_text().splitlines():
        if row.startswith("+++ b/"):
            current, n = row[6:], 0
        elif row.startswith("@@") and current == file:
            n += 1
            m = re.match(r"@@ -(\d+)(?:,\d+)? \+(\d+)", row)
            if m and line in (int(m.group(1)), int(m.group(2))):
                return f"hunk {n} ({row.split(' @@')[0]} @@)"
    return f"line {line}"


def _git_apply(patch: Path, cwd: Path, *flags: str) -> subprocess.CompletedProcess:
    # The ceiling keeps git from finding an enclosing repository (e.g. the insightface clone), where
    # it would take the patch's paths relative to that repository's root instead of arcface_torch.
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(cwd.parent)}
    return subprocess.run(["git", "apply", *flags, str(patch)], cwd=cwd, env=env,
                          capture_output=True, text=True)


def _explain(patch: Path, stderr: str) -> str:
    reasons = []
    for file, line in re.findall(r"patch failed: (\S+):(\d+)", stderr):
        reasons.append(f"{file}: {_hunk_of(patch, file, int(line))} does not match")
    for file in re.findall(r"error: (\S+): No such file or directory", stderr):
        reasons.append(f"{file}: file missing")
    return "; ".join(reasons) or stderr.strip()


def apply_patches(path: str | os.PathLike, reverse: bool = False,
                  check: bool = False) -> list[PatchResult]:
    """Apply (or with ``reverse`` revert) every patch to the arcface_torch dir at ``path``.

    All patches are checked before any is applied, so a failure leaves the tree untouched; a patch
    already in the wanted state is skipped. ``check`` only reports what would happen.
    """
    if shutil.which("git") is None:
        raise PatchError("git is needed to apply the patches (it is used as a plain patch tool)")
    target = find_arcface_dir(path)
    patches = patch_files()
    plan = []
    for patch in (reversed(patches) if reverse else patches):
        forward = ("--reverse",) if reverse else ()
        backward = () if reverse else ("--reverse",)
        done = _git_apply(patch, target, "--check", *forward)
        if done.returncode == 0:
            plan.append((patch, True))
        elif _git_apply(patch, target, "--check", *backward).returncode == 0:
            plan.append((patch, False))  # already in the wanted state
        else:
            verb = "revert" if reverse else "apply"
            raise PatchError(f"{patch.name} does not {verb} to {target}: {_explain(patch, done.stderr)} "
                             f"(is this arcface_torch at upstream commit 7fadd420?). Nothing was changed.")
    results = []
    for patch, needed in plan:
        if not needed:
            status = "not applied" if reverse else "already applied"
        elif check:
            status = "would revert" if reverse else "would apply"
        else:
            run = _git_apply(patch, target, *(("--reverse",) if reverse else ()))
            if run.returncode != 0:
                raise PatchError(f"{patch.name}: git apply failed after a clean check: "
                                 f"{run.stderr.strip()}")
            status = "reverted" if reverse else "applied"
        results.append(PatchResult(patch, status, _files(patch)))
    return results
