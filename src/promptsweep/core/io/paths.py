"""Files a suite, template, experiment or search space names stay inside the project.

These files arrive in pull requests. A template whose ``examples.pool.dataset`` is
``../../../elsewhere/creds.jsonl`` (or an absolute path, or a symbolic link inside the project
pointing out of it) would otherwise be read and its records sent to the server as few-shot
turns. Every such path is resolved (symbolic links included) and must lie inside the project
root or a folder the user allowed on the command line (``--allow-path DIR``); the refusal names
the file, the key and the path, and nothing is read before the check.

The rule is about files in the project (which a pull request can change): a file inside the
project may name files inside it only. A file outside it was chosen by the user (on the command
line, ``--golden``, ``--prompt-template``, or through the Python API, e.g. a suite in a temporary
folder) and its own references are not checked. The pytest plugin sets the policy once per run
(the root is pytest's rootdir); without one (the Python API on its own) nothing is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from promptsweep.core.io.errors import ConfigError


@dataclass(frozen=True)
class PathPolicy:
    """Where files named by other files may be: ``root`` and the ``allowed`` folders."""

    root: Path
    allowed: tuple[Path, ...] = ()
    given_root: Path | None = None
    """The root as pytest names it (before resolving links), to recognise files in the project."""

    @classmethod
    def of(cls, root: Path, allowed: Sequence[Path] = ()) -> PathPolicy:
        return cls(
            root.resolve(), tuple(Path(p).expanduser().resolve() for p in allowed), given_root=root.absolute()
        )

    def permits(self, resolved: Path) -> bool:
        return any(resolved.is_relative_to(folder) for folder in (self.root, *self.allowed))

    def in_project(self, where: Path) -> bool:
        """Whether ``where`` (a file that names another) lies in the project, as found or resolved."""
        roots = (self.root, self.given_root or self.root)
        return any(p.is_relative_to(r) for p in (where.absolute(), where.resolve()) for r in roots)


_policy: PathPolicy | None = None


def set_path_policy(policy: PathPolicy | None) -> None:
    """The policy every later check uses (set once per run; ``None`` switches checks off)."""
    global _policy
    _policy = policy


def path_policy() -> PathPolicy | None:
    return _policy


def contained(path: Path, *, key: str, where: str | Path, value: str | None = None) -> Path:
    """``path`` resolved, if the policy permits it; otherwise a ``ConfigError`` naming ``where``
    (the file that names it), ``key`` and the path (``value``: as the file spells it). The file
    is not opened."""
    resolved = path.expanduser().resolve()
    policy = _policy
    if policy is None or policy.permits(resolved) or not policy.in_project(Path(where)):
        return resolved
    raise ConfigError(
        f"{where}: {key}: {value if value is not None else path} resolves to {resolved}, outside the project ({policy.root}); "
        "files named by suites, templates, experiments and search spaces must stay inside it "
        "(symbolic links are followed). To use a file elsewhere, pass --allow-path "
        f"{resolved.parent} on the command line"
    )
