"""Where the peer venvs live, what building them installs, and the explicit build step.

The utility benchmark runs diffprivlib, PipelineDP and Tumult in venvs of their own (their pins
clash with pets'). Those venvs are large and installing them downloads from PyPI, so:

* they live in a per-user cache directory (:func:`peer_venvs_dir`), never in the checkout or
  the installed package: ``platformdirs.user_cache_dir("pets")/peers`` when platformdirs is
  installed, else ``$XDG_CACHE_HOME/pets/peers``, else ``~/.cache/pets/peers``;
  ``PETS_BENCH_PEERS_DIR`` overrides it;
* they are built only on request (``pets bench --build-peers`` / ``python -m benchmarks
  --build-peers``), which first prints what will be installed (:func:`describe`) and then
  builds (:func:`build`). Without the flag a missing or outdated peer venv is reported as
  *skipped* with :data:`BUILD_COMMAND`, and nothing is installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
#: Peers that need their own venv (a requirements file ``peers/<name>.txt``).
VENV_PEERS = ("diffprivlib", "pipelinedp", "tumult")
#: Benchmarks that use the peer venvs.
USES_PEERS = ("utility",)
BUILD_COMMAND = "pets bench --build-peers utility"


def peer_venvs_dir() -> Path:
    """The per-user directory that holds one venv per peer (see the module docstring)."""
    if override := os.environ.get("PETS_BENCH_PEERS_DIR"):
        return Path(override).expanduser()
    try:
        import platformdirs
    except ImportError:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg) if xdg else Path.home() / ".cache"
        return base / "pets" / "peers"
    return Path(platformdirs.user_cache_dir("pets")) / "peers"


def requirements(name: str, *, peers: Path = PEERS_DIR) -> list[str]:
    """The requirement lines (``package==version`` …) of a peer, comments dropped."""
    lines = (peers / f"{name}.txt").read_text().splitlines()
    return [ln.split("#", 1)[0].strip() for ln in lines if ln.split("#", 1)[0].strip()]


def describe(names: Iterable[str], *, venvs: Path | None = None,
             peers: Path = PEERS_DIR) -> str:
    """What :func:`build` will install, one peer per line, before anything is installed."""
    where = venvs or peer_venvs_dir()
    lines = [f"Building peer venvs in {where} (pip, from PyPI):"]
    for name in names:
        try:
            reqs = ", ".join(requirements(name, peers=peers))
        except OSError as exc:
            reqs = f"(no requirements: {exc.strerror or exc})"
        lines.append(f"  {name}: {reqs}")
    return "\n".join(lines)


def build(names: Iterable[str], *, say: Callable[[str], None] = print,
          venvs: Path | None = None, peers: Path = PEERS_DIR,
          timeout: float = 1800.0) -> dict[str, str]:
    """Print :func:`describe`, then build (or reuse) each peer's venv; ``{name: reason}`` of
    the peers that failed (empty when all are ready)."""
    from benchmarks.privacy_utility import ensure_venv

    names = list(names)
    where = venvs or peer_venvs_dir()
    say(describe(names, venvs=where, peers=peers))
    failed = {}
    for name in names:
        python, secs, reason = ensure_venv(name, venvs=where, peers=peers, timeout=timeout,
                                           build=True)
        if python is None:
            failed[name] = reason
            say(f"  {name}: failed: {reason}")
        else:
            say(f"  {name}: " + ("up to date" if secs is None else f"installed in {secs:.0f} s"))
    return failed
