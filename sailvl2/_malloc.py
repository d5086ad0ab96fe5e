"""Run long CPU jobs under mimalloc instead of glibc's malloc (Linux).

Why: under glibc, a training process slows down as it runs. Its heap fragments under the trainer's many
differently sized tensors (peak RSS +2 MB per step), and the same work takes ~30 % longer after a few hundred
steps, while a fresh process is fast again. mimalloc (or jemalloc) keeps the RSS flat and the steps fast
(docs/nano-sessions.md, sessions 18-19). glibc's own knobs do not help: sending mid-size blocks to mmap makes
every step fault in fresh pages (2.5x slower), and capping arenas or raising the mmap threshold leaves the growth.

An allocator has to be in place before the process allocates anything, so `sailvl2 train | nano | eval | curate`,
run from the command line, re-execute themselves once with ``LD_PRELOAD`` naming the library, before importing
torch. The library comes from the ``cmeel-mimalloc`` wheel (installed with ``sailvl2[train]`` on Linux).
``SAILVL2_MALLOC`` chooses:

- unset or ``auto``: mimalloc when the wheel is installed, else glibc (nothing happens);
- ``system``: never re-execute (glibc, or whatever ``LD_PRELOAD`` already names);
- a path to a shared library (for example ``/usr/lib/x86_64-linux-gnu/libjemalloc.so.2``): that one.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

ENV_CHOICE = "SAILVL2_MALLOC"
# Set in the re-executed process: never re-execute twice, even when the loader ignored the library.
_ENV_DONE = "SAILVL2_MALLOC_ACTIVE"


def mimalloc_library() -> Path | None:
    """The shared library inside the installed ``cmeel-mimalloc`` wheel, or None."""
    try:
        files = metadata.distribution("cmeel-mimalloc").files or []
    except metadata.PackageNotFoundError:
        return None
    candidates = sorted(Path(str(f.locate())) for f in files if Path(str(f)).name.startswith("libmimalloc.so"))
    # libmimalloc.so, .so.3, .so.3.4 are copies of one library; take the shortest existing name.
    existing = [path for path in candidates if path.is_file()]
    return min(existing, key=lambda path: len(path.name)) if existing else None


def chosen_library(environ: dict[str, str] | os._Environ[str] = os.environ,
                   platform: str = sys.platform) -> Path | None:
    """The allocator to preload for this process, or None to run as it is."""
    if platform != "linux" or environ.get(_ENV_DONE):
        return None
    choice = environ.get(ENV_CHOICE, "auto").strip()
    if choice == "system":
        return None
    library = mimalloc_library() if choice in ("", "auto") else Path(choice)
    if library is None:
        return None
    if not library.is_file():
        # An explicit path that is not there: say so, and go on with the system allocator.
        print(f"sailvl2: {ENV_CHOICE}={choice}: no such library; running with the system allocator",
              file=sys.stderr)
        return None
    if str(library) in environ.get("LD_PRELOAD", "").replace(":", " ").split():
        return None
    if any(separator in str(library) for separator in (" ", ":")):
        # The loader splits LD_PRELOAD at spaces and colons: such a path cannot be named there.
        print(f"sailvl2: {library} has a space or colon in its path, which LD_PRELOAD cannot carry; "
              "running with the system allocator", file=sys.stderr)
        return None
    return library


def preload_environment(library: Path, environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, str]:
    """A copy of ``environ`` that preloads ``library`` first (before any other preloads) and marks it done."""
    env = dict(environ)
    others = env.get("LD_PRELOAD", "").strip()
    env["LD_PRELOAD"] = f"{library} {others}".strip()
    env[_ENV_DONE] = str(library)
    return env


def reexec_with_allocator() -> None:
    """Replace this process by the same command under the chosen allocator; return if there is none.

    Call only at the start of a command-line run (nothing allocated by torch yet); it keeps the process id,
    so torchrun and job schedulers see the same process.
    """
    library = chosen_library()
    if library is None:
        return
    env = preload_environment(library)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # sys.orig_argv is the interpreter's own command line (options, -m module or script, arguments).
        os.execve(sys.executable, list(sys.orig_argv), env)
    except OSError as err:  # an interpreter that cannot be re-executed: run on, with the system allocator
        print(f"sailvl2: could not re-execute under {library.name} ({err}); running with the system allocator",
              file=sys.stderr)


def active_allocator() -> str:
    """The allocator this process runs under, for run summaries: mimalloc, jemalloc, tcmalloc or system."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return "system"
    for name in ("mimalloc", "jemalloc", "tcmalloc"):
        if f"lib{name}" in maps:
            return name
    return "system"


if __name__ == "__main__":
    # `python -m sailvl2._malloc ARGS...` runs `python ARGS...` under the chosen allocator (the Makefile's test
    # target: the suite trains many small runs in one process).
    chosen = chosen_library()
    os.execve(sys.executable, [sys.executable, *sys.argv[1:]],
              preload_environment(chosen) if chosen is not None else dict(os.environ))
